//! Unit tests of the service API and the scheduler against the in-memory store.
