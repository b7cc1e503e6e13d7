//! HumanEval-style programs for the one-shot batch: plain Python (no import at all), each a
//! small function followed by a `check` of literal asserts and `print("ok")`, as a code judge
//! runs a candidate solution against its tests. Generated, not the real data set: the same
//! `n` programs on every run (a fixed seed), with the expected values computed here so that a
//! program that did not really run cannot pass.

/// What every program prints when its asserts hold.
pub const EXPECTED_STDOUT: &str = "ok\n";

/// HumanEval has 164 problems.
pub const HUMANEVAL_SIZE: usize = 164;

/// `n` programs, eight kinds in turn, each kind's inputs drawn from a seeded generator.
pub fn programs(n: usize) -> Vec<String> {
    let mut rng = SplitMix(0x5eed_1e55_c0de_0019);
    (0..n).map(|i| program(i % 8, &mut rng)).collect()
}

fn program(kind: usize, rng: &mut SplitMix) -> String {
    let (function, name, cases): (&str, &str, Vec<(String, String)>) = match kind {
        0 => (
            "def fib(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a",
            "fib",
            (0..4)
                .map(|_| {
                    let n = rng.below(80);
                    (n.to_string(), fib(n).to_string())
                })
                .collect(),
        ),
        1 => (
            "def is_prime(n):\n    if n < 2:\n        return False\n    i = 2\n    while i * i <= n:\n        if n % i == 0:\n            return False\n        i += 1\n    return True",
            "is_prime",
            (0..6)
                .map(|_| {
                    let n = rng.below(100_000);
                    (n.to_string(), python_bool(is_prime(n)).into())
                })
                .collect(),
        ),
        2 => (
            "def digit_sum(n):\n    return sum(int(c) for c in str(abs(n)))",
            "digit_sum",
            (0..5)
                .map(|_| {
                    let n = rng.below(1_000_000_000);
                    (n.to_string(), digit_sum(n).to_string())
                })
                .collect(),
        ),
        3 => (
            "def is_palindrome(text):\n    return text == text[::-1]",
            "is_palindrome",
            (0..4)
                .map(|k| {
                    let len = 1 + rng.below(8) as usize;
                    let half = rng.word(len);
                    // Every other case is made a palindrome, so both answers are checked.
                    let text = if k % 2 == 0 {
                        half.clone() + &half.chars().rev().collect::<String>()
                    } else {
                        half.clone() + "x" + &half
                    };
                    let answer = text.chars().eq(text.chars().rev());
                    (format!("{text:?}"), python_bool(answer).into())
                })
                .collect(),
        ),
        4 => (
            "def gcd(a, b):\n    while b:\n        a, b = b, a % b\n    return a",
            "gcd",
            (0..5)
                .map(|_| {
                    let k = 1 + rng.below(500);
                    let (a, b) = (k * (1 + rng.below(2000)), k * (1 + rng.below(2000)));
                    (format!("{a}, {b}"), gcd(a, b).to_string())
                })
                .collect(),
        ),
        5 => (
            "def count_vowels(text):\n    return sum(1 for c in text.lower() if c in 'aeiou')",
            "count_vowels",
            (0..4)
                .map(|_| {
                    let len = 5 + rng.below(30) as usize;
                    let text = rng.word(len);
                    let vowels = text.chars().filter(|c| "aeiou".contains(*c)).count();
                    (format!("{text:?}"), vowels.to_string())
                })
                .collect(),
        ),
        6 => (
            "def unique_sorted(xs):\n    return sorted(set(xs))",
            "unique_sorted",
            (0..3)
                .map(|_| {
                    let xs: Vec<i64> = (0..5 + rng.below(20))
                        .map(|_| rng.below(40) as i64 - 20)
                        .collect();
                    let mut unique = xs.clone();
                    unique.sort_unstable();
                    unique.dedup();
                    (python_list(&xs), python_list(&unique))
                })
                .collect(),
        ),
        _ => (
            "def max_subarray(xs):\n    best = cur = xs[0]\n    for x in xs[1:]:\n        cur = max(x, cur + x)\n        best = max(best, cur)\n    return best",
            "max_subarray",
            (0..3)
                .map(|_| {
                    let xs: Vec<i64> = (0..1 + rng.below(30))
                        .map(|_| rng.below(200) as i64 - 100)
                        .collect();
                    (python_list(&xs), max_subarray(&xs).to_string())
                })
                .collect(),
        ),
    };
    let asserts: String = cases
        .iter()
        .map(|(args, expected)| format!("    assert candidate({args}) == {expected}\n"))
        .collect();
    format!("{function}\n\n\ndef check(candidate):\n{asserts}\n\ncheck({name})\nprint(\"ok\")\n")
}

fn fib(n: u64) -> u128 {
    let (mut a, mut b) = (0u128, 1u128);
    for _ in 0..n {
        (a, b) = (b, a + b);
    }
    a
}

fn is_prime(n: u64) -> bool {
    n >= 2
        && (2..)
            .take_while(|i| i * i <= n)
            .all(|i| !n.is_multiple_of(i))
}

fn digit_sum(n: u64) -> u64 {
    n.to_string().bytes().map(|b| u64::from(b - b'0')).sum()
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

fn max_subarray(xs: &[i64]) -> i64 {
    let (mut best, mut cur) = (xs[0], xs[0]);
    for &x in &xs[1..] {
        cur = x.max(cur + x);
        best = best.max(cur);
    }
    best
}

fn python_bool(b: bool) -> &'static str {
    if b { "True" } else { "False" }
}

fn python_list(xs: &[i64]) -> String {
    let items: Vec<String> = xs.iter().map(i64::to_string).collect();
    format!("[{}]", items.join(", "))
}

/// SplitMix64: a few lines, and the same sequence everywhere (no dependency for a seed).
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Lower-case ASCII letters only: the same literal in Rust's `{:?}` and Python.
    fn word(&mut self, len: usize) -> String {
        (0..len)
            .map(|_| char::from(b'a' + self.below(26) as u8))
            .collect()
    }
}
