//! Layers between the store engine and the primary backend, each itself a [`crate::backends::Backend`].

pub mod write_behind;
