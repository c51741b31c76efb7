//! What locating a client by its address costs per request: `location::locate` for the `spin`
//! profile (parse `spin-client-addr`, look the address up in the real IP table), interleaved
//! with a baseline every request pays anyway (serde_json parsing a small chat body).
//!
//! Needs the data set: `MERIDIAN_GEOIP="$(./scripts/geoip)" cargo bench --bench geoip`.
//! `MERIDIAN_GEOIP_CALLS=N` only runs N lookups, for an instruction count under callgrind
//! (scripts/bench does this: the difference between N and 0 calls, divided by N).

use std::time::Instant;

use meridian::location;
use meridian::policy::{self, geoip};

mod common;
use common::pct;

/// Addresses spread over the whole space (IPv4 and IPv6), the same every run.
fn addresses(n: usize) -> Vec<Vec<(String, String)>> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let addr = if i % 4 == 3 {
                let v6 = std::net::Ipv6Addr::from((0x2000u128 << 112) | u128::from(x) << 40);
                format!("[{v6}]:443")
            } else {
                format!("{}:443", std::net::Ipv4Addr::from(x as u32))
            };
            vec![("spin-client-addr".to_string(), addr)]
        })
        .collect()
}

fn main() {
    let Some(dir) = std::env::var_os("MERIDIAN_GEOIP") else {
        println!("geoip: set MERIDIAN_GEOIP=\"$(./scripts/geoip)\" to measure the IP table");
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
    let t = Instant::now();
    let v4 = geoip::read_num_csv(&read("geo-whois-asn-country-ipv4-num.csv")).unwrap();
    let v6 = geoip::read_num_csv(&read("geo-whois-asn-country-ipv6-num.csv")).unwrap();
    let bytes = geoip::build("bench", "bench", &v4, &v6).unwrap();
    let built_ms = t.elapsed().as_secs_f64() * 1e3;
    let table = geoip::GeoTable::parse(&bytes).unwrap();
    let source = policy::load(
        "version = 1\n[settings.client]\nplatform = \"spin\"\n[[providers]]\nid = \"a\"\nbase_url = \"https://a.example/v1\"\nlocation = \"DE\"\nmodels = { \"m\" = \"m\" }\n",
        "bench",
    )
    .unwrap()
    .settings
    .client;
    let requests = addresses(4096);

    if let Some(n) = std::env::var("MERIDIAN_GEOIP_CALLS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        for i in 0..n {
            std::hint::black_box(location::locate(
                &source,
                std::hint::black_box(&requests[i % requests.len()]),
                Some(&table),
                None,
            ));
        }
        return;
    }

    let located = requests
        .iter()
        .filter(|h| {
            location::locate(&source, h, Some(&table), None).country != policy::Country::UNKNOWN
        })
        .count();
    println!(
        "ip table: {} IPv4 and {} IPv6 ranges from {} + {} rows, {} bytes, built in {built_ms:.0} ms; {located} of {} sample addresses have a country",
        table.len().0,
        table.len().1,
        v4.len(),
        v6.len(),
        bytes.len(),
        requests.len()
    );
    let raw = br#"{"model":"m","messages":[{"role":"user","content":"Hello there, how are you today?"}]}"#;
    let (mut look, mut base) = (Vec::new(), Vec::new());
    for round in 0..300 {
        let t = Instant::now();
        for i in 0..64 {
            std::hint::black_box(location::locate(
                &source,
                &requests[(round * 64 + i) % requests.len()],
                Some(&table),
                None,
            ));
        }
        look.push(t.elapsed().as_secs_f64() * 1e9 / 64.0);
        let t = Instant::now();
        for _ in 0..64 {
            std::hint::black_box(
                serde_json::from_slice::<serde_json::Value>(std::hint::black_box(raw)).unwrap(),
            );
        }
        base.push(t.elapsed().as_secs_f64() * 1e9 / 64.0);
    }
    let (l, b) = (pct(&mut look, 0.5), pct(&mut base, 0.5));
    println!(
        "locate by address: median {l:.0} ns | baseline, serde_json parse of a {} byte body: median {b:.0} ns → {:.2}× that parse",
        raw.len(),
        l / b
    );
}
