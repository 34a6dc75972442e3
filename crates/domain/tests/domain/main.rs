//! The domain's tests: wire names and validation, the state table, the retry
//! policy, id namespaces, and properties over generated inputs. One test
//! binary, so the suite links once.

mod id_spaces;
mod properties;
mod retry;
mod state_table;
mod support;
mod validation;
mod wire_names;
