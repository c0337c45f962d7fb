//! cargo-fuzz target: see keel::fuzzing::request.
#![no_main]

// The broker's allocator, as in main.rs: without it a decoder's `Vec::with_capacity` of a
// claimed length aborts here where the broker would not (see keel::alloc).
#[global_allocator]
static ALLOCATOR: keel::alloc::LazyHugeAllocator = keel::alloc::LazyHugeAllocator;

libfuzzer_sys::fuzz_target!(|data: &[u8]| keel::fuzzing::request(data));
