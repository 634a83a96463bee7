//! What the address-keyed table costs on the paths production mode puts it
//! on: a free's lookup of a block the table does not hold (every unsampled
//! free), and an insert plus remove (every sampled block). Prints
//! nanoseconds per operation with the table holding `LIVE` entries, beside
//! a baseline loop over the same addresses doing no lookup.
//!
//! `cargo run --release -p mwrap-core --example address_table_cost`

use std::hint::black_box;
use std::time::Instant;

use mwrap_core::address_table::AddressTable;

fn main() {
    let live: usize = std::env::var("LIVE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let n = 20_000_000usize;
    let table = AddressTable::new();
    // Heap-like addresses: 16-byte aligned, clustered.
    let addr = |i: usize| 0x5555_0000_0000usize + i * 48;
    for i in 0..live {
        table.insert(addr(i * 1000 + 7), i).unwrap();
    }
    let t = Instant::now();
    let mut sum = 0usize;
    for i in 0..n {
        sum = sum.wrapping_add(black_box(addr(i)));
    }
    let base = t.elapsed().as_nanos() as f64 / n as f64;
    black_box(sum);
    let t = Instant::now();
    let mut hits = 0usize;
    for i in 0..n {
        hits += table.remove(black_box(addr(i * 1000 + 3))).is_some() as usize;
    }
    let miss = t.elapsed().as_nanos() as f64 / n as f64;
    assert_eq!(hits, 0);
    let rounds = 2_000_000usize;
    let t = Instant::now();
    for i in 0..rounds {
        let a = addr(i * 1000 + 11);
        table.insert(a, i).unwrap();
        assert_eq!(table.remove(a), Some(i));
    }
    let pair = t.elapsed().as_nanos() as f64 / rounds as f64;
    println!(
        "live entries {live}: miss {miss:.2} ns (baseline loop {base:.2} ns), insert+remove {pair:.2} ns, mapped {} KiB",
        table.mapped_bytes() / 1024
    );
}
