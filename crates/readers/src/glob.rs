//! Path patterns from `files` and prompts, and whether two of them can name
//! the same file.
//!
//! Patterns use the glob syntax of the `files` key: `*` and `?` within one
//! path segment, `[abc]`/`[a-z]`/`[!x]` classes, and `**` for any number of
//! segments. Two patterns *overlap* when some path matches both; the test
//! walks both patterns at once (a product of two small automata, first over
//! segments, then over the characters of two segments), so it is exact for
//! this syntax, except that negated classes are assumed to overlap anything.

use std::collections::HashSet;
use std::path::{Component, Path};

/// A normalised path pattern: `/`-separated, relative to the plan's
/// directory when it is inside it, without `.` segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    text: String,
    segs: Vec<Seg>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    /// `**`: any number of segments.
    AnyDepth,
    /// One segment.
    Part(Vec<Tok>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Lit(char),
    /// `?`
    One,
    /// `*`
    Star,
    /// `[...]`: ranges, negated or not.
    Class(bool, Vec<(char, char)>),
}

impl PathPattern {
    /// Parses `text`, written relative to `base` (or absolute). A trailing
    /// `/` names a directory: everything under it.
    pub fn parse(text: &str, base: &Path) -> PathPattern {
        let dir = text.ends_with('/');
        let mut parts: Vec<String> = Vec::new();
        let p = Path::new(text);
        let rel = if p.is_absolute() {
            p.strip_prefix(base).ok()
        } else {
            Some(p)
        };
        let absolute = rel.is_none();
        for c in rel.unwrap_or(p).components() {
            match c {
                Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
                Component::ParentDir => {
                    if parts.last().is_some_and(|l| l != "..") {
                        parts.pop();
                    } else {
                        parts.push("..".to_owned());
                    }
                }
                Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
            }
        }
        if dir {
            parts.push("**".to_owned());
        }
        let mut normal = parts.join("/");
        if absolute {
            normal.insert(0, '/');
        }
        let mut segs = Vec::new();
        if absolute {
            // A segment no relative pattern can match.
            segs.push(Seg::Part(vec![Tok::Lit('/')]));
        }
        for part in &parts {
            let seg = if part == "**" {
                Seg::AnyDepth
            } else {
                Seg::Part(tokens(part))
            };
            // `**/**` is `**`.
            if seg == Seg::AnyDepth && segs.last() == Some(&Seg::AnyDepth) {
                continue;
            }
            segs.push(seg);
        }
        PathPattern { text: normal, segs }
    }

    /// The normalised text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the pattern names exactly one path.
    pub fn is_literal(&self) -> bool {
        self.segs.iter().all(|s| match s {
            Seg::AnyDepth => false,
            Seg::Part(t) => t.iter().all(|t| matches!(t, Tok::Lit(_))),
        })
    }

    /// Whether some path matches both patterns.
    pub fn overlaps(&self, other: &PathPattern) -> bool {
        intersect(
            &self.segs,
            &other.segs,
            |s| *s == Seg::AnyDepth,
            |a, b| match (a, b) {
                (Seg::Part(x), Seg::Part(y)) => intersect(x, y, |t| *t == Tok::Star, chars_overlap),
                _ => true,
            },
        )
    }

    /// Whether `path` (normalised like a pattern) matches.
    pub fn matches(&self, path: &str) -> bool {
        self.overlaps(&PathPattern::parse(&escape(path), Path::new("")))
    }
}

/// `path` with glob characters escaped, so it parses as a literal.
pub fn escape(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        match c {
            '*' | '?' | '[' => {
                out.push('[');
                out.push(c);
                out.push(']');
            }
            _ => out.push(c),
        }
    }
    out
}

fn tokens(part: &str) -> Vec<Tok> {
    let chars: Vec<char> = part.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '*' => {
                if out.last() != Some(&Tok::Star) {
                    out.push(Tok::Star);
                }
            }
            '?' => out.push(Tok::One),
            '[' => {
                // A class runs to the next `]` after at least one character.
                let close = (i + 2..chars.len()).find(|&k| chars[k] == ']');
                match close {
                    Some(end) => {
                        let mut body = &chars[i + 1..end];
                        let neg = matches!(body.first(), Some('!' | '^'));
                        if neg {
                            body = &body[1..];
                        }
                        let mut ranges = Vec::new();
                        let mut k = 0;
                        while k < body.len() {
                            if k + 2 < body.len() && body[k + 1] == '-' {
                                ranges.push((body[k], body[k + 2]));
                                k += 3;
                            } else {
                                ranges.push((body[k], body[k]));
                                k += 1;
                            }
                        }
                        out.push(Tok::Class(neg, ranges));
                        i = end;
                    }
                    None => out.push(Tok::Lit('[')),
                }
            }
            c => out.push(Tok::Lit(c)),
        }
        i += 1;
    }
    out
}

fn chars_overlap(a: &Tok, b: &Tok) -> bool {
    let class_has = |neg: bool, ranges: &[(char, char)], c: char| {
        ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != neg
    };
    match (a, b) {
        (Tok::Lit(x), Tok::Lit(y)) => x == y,
        (Tok::One, _) | (_, Tok::One) | (Tok::Star, _) | (_, Tok::Star) => true,
        (Tok::Lit(c), Tok::Class(neg, r)) | (Tok::Class(neg, r), Tok::Lit(c)) => {
            class_has(*neg, r, *c)
        }
        (Tok::Class(n1, r1), Tok::Class(n2, r2)) => {
            if *n1 || *n2 {
                // Conservative: a negated class leaves almost everything.
                return true;
            }
            r1.iter()
                .any(|&(a1, b1)| r2.iter().any(|&(a2, b2)| a1 <= b2 && a2 <= b1))
        }
    }
}

/// Whether some word is accepted by both patterns, where `star` symbols
/// match any number of symbols and the others match one symbol each when
/// `compatible`. A depth-first walk over pairs of positions.
fn intersect<T>(
    a: &[T],
    b: &[T],
    star: impl Fn(&T) -> bool,
    compatible: impl Fn(&T, &T) -> bool,
) -> bool {
    let mut seen: HashSet<(usize, usize)> = HashSet::new();
    let mut stack = vec![(0usize, 0usize)];
    while let Some((i, j)) = stack.pop() {
        if !seen.insert((i, j)) {
            continue;
        }
        let (ea, eb) = (i == a.len(), j == b.len());
        if ea && eb {
            return true;
        }
        let sa = !ea && star(&a[i]);
        let sb = !eb && star(&b[j]);
        // A star may match nothing.
        if sa {
            stack.push((i + 1, j));
        }
        if sb {
            stack.push((i, j + 1));
        }
        if ea || eb {
            continue;
        }
        // Both consume one symbol.
        match (sa, sb) {
            (true, true) => {}
            (true, false) => stack.push((i, j + 1)),
            (false, true) => stack.push((i + 1, j)),
            (false, false) => {
                if compatible(&a[i], &b[j]) {
                    stack.push((i + 1, j + 1));
                }
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PathPattern {
        PathPattern::parse(s, Path::new("/repo"))
    }

    fn ov(a: &str, b: &str) -> bool {
        let r = p(a).overlaps(&p(b));
        assert_eq!(r, p(b).overlaps(&p(a)), "not symmetric: {a} {b}");
        r
    }

    #[test]
    fn normalises() {
        assert_eq!(p("./src//lib.rs").as_str(), "src/lib.rs");
        assert_eq!(p("/repo/src/lib.rs").as_str(), "src/lib.rs");
        assert_eq!(p("a/../b").as_str(), "b");
        assert_eq!(p("src/api/").as_str(), "src/api/**");
        assert_eq!(p("/etc/passwd").as_str(), "/etc/passwd");
        assert!(p("src/lib.rs").is_literal());
        assert!(!p("src/*.rs").is_literal());
    }

    #[test]
    fn overlaps_like_globs() {
        assert!(ov("src/lib.rs", "src/lib.rs"));
        assert!(!ov("src/lib.rs", "src/main.rs"));
        assert!(ov("src/*.rs", "src/lib.rs"));
        assert!(!ov("src/*.rs", "src/a/lib.rs"));
        assert!(ov("src/**", "src/a/b/c.rs"));
        assert!(ov("src/**/*.rs", "src/lib.rs"));
        assert!(ov("**/*.py", "app/models.py"));
        assert!(!ov("**/*.py", "app/models.rs"));
        assert!(ov("src/*.rs", "src/l*"));
        assert!(!ov("src/*.rs", "src/*.py"));
        assert!(ov("a/*/c", "a/b/*"));
        assert!(!ov("a/*/c", "a/b/d"));
        assert!(ov("file[0-9].txt", "file7.txt"));
        assert!(!ov("file[0-9].txt", "filex.txt"));
        assert!(ov("file[0-3].txt", "file[2-5].txt"));
        assert!(!ov("file[0-1].txt", "file[2-5].txt"));
        assert!(ov("docs/", "docs/api.md"));
        assert!(!ov("docs/", "doc/api.md"));
        assert!(ov("?.md", "a.md"));
        assert!(!ov("?.md", "ab.md"));
        assert!(!ov("/etc/passwd", "etc/passwd"));
    }

    #[test]
    fn matches_literal_paths_with_glob_characters() {
        assert!(p("a/*").matches("a/[x]"));
        assert!(!p("a/b").matches("a/*"));
        assert!(p("a/[*]").matches("a/*"));
    }
}
