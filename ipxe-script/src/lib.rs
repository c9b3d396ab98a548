//! ipxe-script (under construction).
