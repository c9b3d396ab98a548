//! squashfs-writer (under construction).
