//! PLACEHOLDER: replaced by header views and builders.
