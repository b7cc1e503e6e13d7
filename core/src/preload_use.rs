//! Whether a one-shot's code might need the preload, decided from its text alone.
//!
//! One-shots whose code cannot need the preload run on a worker forked from the lean template
//! (no preload: a fraction of the memory to fork and to tear down). The decision must be
//! cheap (it is on every one-shot's path) and conservative: a false positive only costs the
//! one-shot the heavy worker's speed, a false negative would give the code a `NameError` (or
//! another answer) that a preloaded worker would not. So it is a scan of the text, strings
//! and comments included, for whole words:
//!
//! - each preload entry's module (its first dotted part: what `import a.b` binds, and what
//!   `import a.b` / `from a.b import c` / `sys.modules["a.b"]` must spell) and its alias;
//! - the ways code reaches a name it does not spell: the namespace itself (`globals`,
//!   `locals`, `vars`, `dir`, `__dict__`, a function's `__globals__`, `__main__`), frames,
//!   whose `f_globals` is the namespace (`f_globals`, `f_locals`, `_getframe`,
//!   `currentframe`, `inspect`, `tb_frame`, `gi_frame`, `cr_frame`, `walk_stack`, `walk_tb`),
//!   the garbage collector's object lists (`get_objects`, `get_referrers`), text run as code
//!   (`eval`, `exec`, `breakpoint`, `pdb`), and the module table (`modules`, as in
//!   `sys.modules`; `__import__`, `importlib`, which import by computed name);
//! - any character outside ASCII: Python folds identifiers with NFKC, so `ｎｐ` *is* `np`,
//!   and telling identifiers from string contents needs a tokenizer.
//!
//! Not on the list: `compile` (a code object reaches names only when `exec`/`eval` or a
//! function over `globals()` runs it: listed), `pickle` (unpickling imports what it needs,
//! which a lean worker does too: slower, never differently), `getattr` (it reaches the
//! namespace only from an object one of the words above produced). The scan guards honest
//! code against a different answer; hostile code gains nothing by getting past it, since a
//! lean worker is sandboxed exactly like a preloaded one: it can only change its own answer.

use std::collections::HashSet;

/// Words that reach names or modules without spelling them (see the module's doc).
const INDIRECT: &[&str] = &[
    "globals",
    "locals",
    "vars",
    "dir",
    "__dict__",
    "__globals__",
    "f_globals",
    "f_locals",
    "__main__",
    "_getframe",
    "currentframe",
    "inspect",
    "tb_frame",
    "gi_frame",
    "cr_frame",
    "walk_stack",
    "walk_tb",
    "get_objects",
    "get_referrers",
    "eval",
    "exec",
    "breakpoint",
    "pdb",
    "modules",
    "__import__",
    "importlib",
];

/// The words that send code to a preloaded worker.
#[derive(Debug, Clone)]
pub struct PreloadUse {
    words: HashSet<String>,
}

impl PreloadUse {
    /// For a preload list (`python.preload`: `module` or `module as alias`, as after `import`;
    /// a comma-separated list in one entry is read too).
    pub fn new(preload: &[String]) -> PreloadUse {
        let mut words: HashSet<String> = INDIRECT.iter().map(|w| (*w).to_owned()).collect();
        for entry in preload {
            for spec in entry.split(',') {
                let mut parts = spec.split_whitespace();
                if let Some(module) = parts.next() {
                    let top = module.split('.').next().unwrap_or(module);
                    words.insert(top.to_owned());
                }
                // `module as alias`: whatever follows `as` is bound too.
                words.extend(parts.filter(|w| *w != "as").map(str::to_owned));
            }
        }
        PreloadUse { words }
    }

    /// Whether `code` might need the preload (or the preloaded worker's namespace) to behave
    /// as it would in a preloaded worker.
    pub fn needs_preload(&self, code: &str) -> bool {
        if !code.is_ascii() {
            return true;
        }
        code.split(|c: char| !(c == '_' || c.is_ascii_alphanumeric()))
            .any(|word| !word.is_empty() && self.words.contains(word))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default_preload() -> PreloadUse {
        PreloadUse::new(&[
            "numpy as np".to_owned(),
            "pandas as pd".to_owned(),
            "matplotlib.pyplot as plt".to_owned(),
        ])
    }

    #[test]
    fn plain_python_does_not_need_the_preload() {
        let p = default_preload();
        for code in [
            "print(1)",
            "def add(a, b):\n    return a + b\nassert add(2, 3) == 5\n",
            "import sys\nprint(sys.stdin.read().split())",
            "import math, itertools\nprint(math.comb(5, 2), list(itertools.islice('abc', 2)))",
            "snp = 1\nnumpyish = 2\npd_x = 3\nprint(snp + numpyish + pd_x)",
            "x = {'a': 1}\nprint(x.get('a'))",
            "import re\nprint(re.compile('a+').findall('caab'))",
            "",
        ] {
            assert!(
                !p.needs_preload(code),
                "{code:?} was sent to the heavy worker"
            );
        }
    }

    #[test]
    fn preloaded_modules_and_aliases_as_whole_words_need_it() {
        let p = default_preload();
        for code in [
            "np.zeros(3)",
            "import numpy",
            "from numpy import array",
            "x = pd.DataFrame()",
            "import pandas.testing",
            "plt.plot([1])",
            "import matplotlib",
            "from matplotlib import pyplot",
            "print(1)  # uses np later",
            "print('np')",
            "x=(np)",
            "a=1;np\n",
        ] {
            assert!(
                p.needs_preload(code),
                "{code:?} was sent to the lean worker"
            );
        }
    }

    #[test]
    fn reaching_names_without_spelling_them_needs_it() {
        let p = default_preload();
        for code in [
            "globals()['n' + 'p']",
            "print(locals())",
            "vars()",
            "print(dir())",
            "eval('n' + 'p')",
            "exec('print(n' + 'p)')",
            "import inspect\ninspect.stack()",
            "try:\n    1/0\nexcept Exception as e:\n    e.__traceback__.tb_frame",
            "import gc\ngc.get_objects()",
            "import sys\nprint(len(sys.modules))",
            "from sys import modules",
            "__import__('num' + 'py')",
            "import importlib",
            "f = lambda: 0\nf.__globals__",
            "import sys\nsys._getframe().f_globals",
            "import sys\nsys._getframe().f_locals",
            "import __main__",
            "class A: pass\nA.__dict__",
            "breakpoint()",
            "import pdb",
        ] {
            assert!(
                p.needs_preload(code),
                "{code:?} was sent to the lean worker"
            );
        }
    }

    #[test]
    fn any_non_ascii_character_needs_it() {
        let p = default_preload();
        // NFKC folds the full-width letters into `np`: Python reads this as `np.zeros(2)`.
        assert!(p.needs_preload("\u{ff4e}\u{ff50}.zeros(2)"));
        assert!(p.needs_preload("print('café')"));
    }

    #[test]
    fn every_entry_form_is_read() {
        let p = PreloadUse::new(&[
            "os.path".to_owned(),
            "json as j,  collections as col".to_owned(),
        ]);
        for code in ["os", "j.dumps(1)", "col.deque()", "json", "collections"] {
            assert!(p.needs_preload(code), "{code:?}");
        }
        assert!(!p.needs_preload("path = 1"));
        assert!(!p.needs_preload("print(1)"));
        // Only the indirect words are left without a preload.
        let none = PreloadUse::new(&[]);
        assert!(!none.needs_preload("np.zeros(1)"));
        assert!(none.needs_preload("eval('1')"));
    }
}
