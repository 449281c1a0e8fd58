//! Deterministic simulation harness for warden; see ARCHITECTURE.md.
