//! The synclock binary; see the library's `main` for everything it does.
//!
//! `no_main`: the C library calls this `main` directly, without the Rust
//! runtime's start-up, which costs a short run more than it gives it (see
//! `start.rs` in the library for what is done instead, and why).

#![no_main]

use std::ffi::{c_char, c_int};

/// The program's entry point, called by the C library.
#[unsafe(no_mangle)]
extern "C" fn main(argc: c_int, argv: *const *const c_char) -> c_int {
    // SAFETY: these are the C library's own argc and argv.
    unsafe { synclock::main(argc, argv) }
}
