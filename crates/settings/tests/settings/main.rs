//! Settings loaded from defaults, a file and the environment: every problem
//! reported with its key, cluster URL lists, and the address classifier's
//! ranges. One test binary, so the suite links once.

mod addresses;
mod cluster;
mod load;
mod validation;
