//! flowsteer control.
