//! A mutational fuzzer on stable Rust for the compiled core's two parsers of untrusted bytes
//! (cargo fuzz needs nightly). Usage, from native/:
//!
//!   cargo run --release --example fuzz -- decode|verify SECONDS [SEED]
//!
//! It mutates the corpus in fuzz/corpus/<target>/ (bit flips, interesting bytes and varints,
//! inserts, deletes, splices, truncation), runs each input with panics caught, writes an input
//! that panics to fuzz/crashes/<target>/, and adds to the corpus an input that reaches an outcome
//! label not seen before (a coarse stand-in for coverage feedback).

use std::collections::HashSet;
use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::time::{Duration, Instant};

use govbus_native::fuzzing;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next() % n as u64) as usize }
    }
}

const INTERESTING: [&[u8]; 10] = [
    b"\x00", b"\x01", b"\x02", b"\x7f", b"\x80", b"\xff", b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",
    b"\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x02", b"\xfe\xff\xff\xff\x0f", b"\xc3\x01",
];

fn mutate(rng: &mut Rng, input: &[u8], corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = v.len();
        match rng.below(8) {
            0 if len > 0 => {
                let i = rng.below(len);
                v[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                v[i] = rng.next() as u8;
            }
            2 => {
                let i = rng.below(len + 1);
                let ins = INTERESTING[rng.below(INTERESTING.len())];
                v.splice(i..i, ins.iter().copied());
            }
            3 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(16));
                v.drain(i..i + n);
            }
            4 => v.truncate(rng.below(len + 1)),
            5 if !corpus.is_empty() => {
                let other = &corpus[rng.below(corpus.len())];
                let at = rng.below(len + 1);
                let from = rng.below(other.len() + 1);
                v.truncate(at);
                v.extend_from_slice(&other[from..]);
            }
            6 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(32));
                let chunk = v[i..i + n].to_vec();
                let at = rng.below(len + 1);
                v.splice(at..at, chunk);
            }
            _ => {
                let n = rng.below(8);
                for _ in 0..n {
                    v.push(rng.next() as u8);
                }
            }
        }
    }
    v
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let target = args.get(1).map(String::as_str).unwrap_or("decode").to_owned();
    let seconds: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(10);
    let seed: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(0x9e37_79b9_7f4a_7c15);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let dir = root.join("corpus").join(&target);
    let crashes = root.join("crashes").join(&target);
    let mut corpus: Vec<Vec<u8>> = fs::read_dir(&dir)
        .map(|d| d.filter_map(|e| fs::read(e.ok()?.path()).ok()).collect())
        .unwrap_or_default();
    if corpus.is_empty() {
        corpus.push(Vec::new());
    }
    let schemas = fuzzing::schemas();
    let key = fs::read(root.join("corpus").join("verify.pub")).unwrap_or_default();
    let mut checker = fuzzing::checker(&key);
    let mut run = |input: &[u8]| -> Option<String> {
        catch_unwind(AssertUnwindSafe(|| match target.as_str() {
            "verify" => fuzzing::verify(input, &mut checker),
            _ => fuzzing::decode(input, &schemas),
        }))
        .ok()
    };
    std::panic::set_hook(Box::new(|_| {})); // findings are written to crashes/, not printed per input
    let mut seen: HashSet<String> = corpus.iter().filter_map(|c| run(c)).collect();
    let mut rng = Rng(seed | 1);
    let (started, budget) = (Instant::now(), Duration::from_secs(seconds));
    let (mut runs, mut panics, mut added) = (0u64, 0u64, 0usize);
    while started.elapsed() < budget {
        let base = &corpus[rng.below(corpus.len())];
        let input = mutate(&mut rng, base, &corpus);
        runs += 1;
        match run(&input) {
            None => {
                panics += 1;
                fs::create_dir_all(&crashes).ok();
                fs::write(crashes.join(format!("crash-{runs}")), &input).ok();
            }
            Some(label) => {
                // Kept inputs stay small (the corpus is committed): at most 2 KiB.
                if input.len() <= 2048 && seen.insert(label) && added < 200 {
                    fs::write(dir.join(format!("found-{seed:x}-{runs}")), &input).ok();
                    corpus.push(input);
                    added += 1;
                }
            }
        }
    }
    println!("{target}: {runs} runs in {seconds} s, {panics} panics, {added} inputs added, {} outcome labels", seen.len());
    if panics > 0 {
        std::process::exit(1);
    }
}
