//! Store actors: one actix actor per store, the one place where that store's
//! operations are ordered ([`ordering`]) and its engine lives.
pub mod ordering;
