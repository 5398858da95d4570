//! What a principal may do with a store once a door has let it in: its [`Profile`]
//! (permission letters, a quota share, delete quarantine), what each command needs
//! ([`Need`]) and the one admission check the store actor makes before it runs a
//! command ([`admit`]).
//!
//! The doors decide *who* a caller is and which profile applies ([`crate::access`]);
//! this module decides *what* that profile lets it do. Keeping the check in the store
//! actor, right before the command runs and inside its place in the store's order,
//! means every door enforces the same letters the same way, and a check that needs to
//! look at the store (does the item exist? how full is the store?) sees the store as
//! the command will.
//!
//! - [`profile`]: a profile and its checks.
//! - [`need`]: what a command needs, and the admission check.
//! - [`quarantine`]: deletes that become soft deletes, their ledger and the purge.
//! - [`principals`]: counters per principal (calls, bytes, refusals).

pub mod need;
pub mod principals;
pub mod profile;
pub mod quarantine;

pub use need::{admit, Item, Need};
pub use profile::{Profile, Who};
