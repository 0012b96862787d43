//! Core of sync-engine.
