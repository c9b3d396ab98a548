//! newc-cpio (under construction).
