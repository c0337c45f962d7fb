//! KIP-848 topic subscription patterns (`subscribed_topic_regex`), on the `regex` crate.
//!
//! Kafka compiles the pattern with RE2/J and keeps a topic when `matcher(topic).matches()`, a
//! match of the whole name. The `regex` crate has RE2's syntax (flags such as `(?i)` included)
//! and matches in time linear in the name, so no pattern can make a heartbeat or an assignment
//! take exponential time; its compiled size is bounded, so no pattern can take much memory.

use regex::{Regex, RegexBuilder};
use regex_syntax::ast::{self, Ast};

/// Why a pattern is not a valid regular expression: a short description for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegexError(pub String);

/// The most a compiled pattern may take (the `regex` crate's `size_limit`; its default is 10 MiB).
/// A pattern over the limit is an invalid regular expression. Subscription patterns are small:
/// `[a-zA-Z0-9._-]{1,249}` fits easily. `\w` is Unicode's here (on topic names, which are ASCII,
/// it matches as RE2's ASCII `\w` does) and compiles to some 40 KiB: `\w{20}` fits, `\w{30}`
/// does not. Compiling up to the limit takes about 10 ms.
const SIZE_LIMIT: usize = 1 << 20;

/// A compiled subscription pattern. Cloning shares the compiled program.
#[derive(Debug, Clone)]
pub struct TopicRegex(Regex);

impl TopicRegex {
    pub fn parse(pattern: &str) -> Result<TopicRegex, RegexError> {
        // The pattern is checked alone first, so that it cannot step out of the anchoring group
        // below: `a)|(b` is invalid, not `^(?:a)|(b)$`. This also reports errors at offsets of
        // the client's pattern, in one line.
        check_syntax(pattern)?;
        // Anchored as a whole, alternation included, as RE2/J's `matches()`.
        RegexBuilder::new(&format!("^(?:{pattern})$"))
            .size_limit(SIZE_LIMIT)
            .build()
            .map(TopicRegex)
            .map_err(|e| match e {
                regex::Error::CompiledTooBig(limit) => {
                    RegexError(format!("the compiled pattern would exceed {limit} bytes"))
                }
                // A pattern valid alone but not once wrapped: under `(?x)` a trailing `#` comment
                // runs on over the closing `)$` (RE2/J has no `(?x)` at all).
                e => RegexError(last_line(&e.to_string())),
            })
    }

    /// Whether the whole of `text` matches.
    pub fn matches(&self, text: &str) -> bool {
        self.0.is_match(text)
    }
}

/// Parses `pattern` alone as the `regex` crate will, and refuses what RE2/J refuses where the
/// crate is more lenient: a repetition operator applied directly to another (`a**`, `a*+`,
/// `a{2}{3}`; `(a*)*` is fine), RE2's "invalid nested repetition operator".
fn check_syntax(pattern: &str) -> Result<(), RegexError> {
    let tree = ast::parse::Parser::new()
        .parse(pattern)
        .map_err(|e| at(e.kind(), e.span()))?;
    ast::visit(&tree, NestedRepetition).map_err(|span| at(&"invalid nested repetition operator", &span))?;
    regex_syntax::hir::translate::Translator::new()
        .translate(pattern, &tree)
        .map_err(|e| at(e.kind(), e.span()))?;
    Ok(())
}

fn at(what: &dyn std::fmt::Display, span: &ast::Span) -> RegexError {
    RegexError(format!("{what} at offset {}", span.start.offset))
}

/// Finds a repetition of a repetition, answering the outer operator's span.
struct NestedRepetition;

impl ast::Visitor for NestedRepetition {
    type Output = ();
    type Err = ast::Span;

    fn finish(self) -> Result<(), ast::Span> {
        Ok(())
    }

    fn visit_pre(&mut self, node: &Ast) -> Result<(), ast::Span> {
        match node {
            Ast::Repetition(outer) if matches!(*outer.ast, Ast::Repetition(_)) => Err(outer.op.span),
            _ => Ok(()),
        }
    }
}

/// The `regex` crates' multi-line errors end with `error: <description>`.
fn last_line(message: &str) -> String {
    let line = message.trim_end().lines().last().unwrap_or_default();
    line.strip_prefix("error: ").unwrap_or(line).to_string()
}

#[cfg(test)]
mod tests {
    use super::TopicRegex;

    fn m(pattern: &str, text: &str) -> bool {
        TopicRegex::parse(pattern).expect("valid").matches(text)
    }

    #[test]
    fn matches_whole_topic_names() {
        assert!(m("orders", "orders"));
        assert!(!m("orders", "orders-eu"));
        assert!(m("orders.*", "orders-eu"));
        assert!(m("^orders-(eu|us)$", "orders-us"));
        assert!(!m("orders-(eu|us)", "orders-asia"));
        assert!(m("t[0-9]+", "t42"));
        assert!(!m("t[0-9]+", "t"));
        assert!(m("t[^a-c]?x", "tdx"));
        assert!(m("t[^a-c]?x", "tx"));
        assert!(!m("t[^a-c]x", "tbx"));
        assert!(m(r"a\.b", "a.b"));
        assert!(!m(r"a\.b", "axb"));
        assert!(m(r"log-\d{2,3}", "log-123"));
        assert!(!m(r"log-\d{2,3}", "log-1"));
        assert!(m("(?:a|b)*c", "ababc"));
        assert!(m(".*", ""));
        assert!(m("a|", ""));
        assert!(m("(a*)*b", "aaab"));
        assert!(m("[-_a]+", "_-a"));
    }

    #[test]
    fn anchors_the_whole_pattern() {
        assert!(!m("foo", "foo-bar"));
        assert!(!m("foo", "my-foo"));
        assert!(m("foo|bar", "bar"));
        assert!(!m("foo|bar", "foobar"));
        assert!(!m("foo|bar", "foo-x"));
        assert!(!m("foo|bar", "x-bar"));
        // An unbalanced pattern cannot close the anchoring group and leave an alternation
        // unanchored.
        for bad in ["a)|(b", "a)|(?:b", "a)(b"] {
            assert!(TopicRegex::parse(bad).is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn applies_flags() {
        assert!(m("(?i)orders-.*", "ORDERS-eu"));
        assert!(m("(?i:orders)-eu", "OrDeRs-eu"));
        assert!(!m("(?i:orders)-eu", "orders-EU"));
        assert!(!m("orders-.*", "ORDERS-eu"));
    }

    #[test]
    fn catastrophic_patterns_answer() {
        // Exponential for a backtracking matcher; linear here.
        let name = "a".repeat(200);
        assert!(!m("(a*)*b", &name));
        assert!(!m("(a|aa)*c", &name));
        assert!(!m("(a+)+$b", &name));
        assert!(m("(a|aa)*", &name));
    }

    #[test]
    fn rejects_malformed_patterns() {
        for bad in [
            "(a", "a)", "[a", "*a", "a**", r"\p", "[z-a]", r"a\", "(?z)a", r"\pX",
        ] {
            assert!(TopicRegex::parse(bad).is_err(), "{bad} should not parse");
        }
        assert_eq!(
            TopicRegex::parse("(a").unwrap_err().0,
            "unclosed group at offset 0"
        );
    }

    #[test]
    fn refuses_nested_repetition_operators_as_re2() {
        for bad in ["a**", "a*+", "a+?*", "a{2}{3}", "a*{2}", "(?:a|b)+*"] {
            let e = TopicRegex::parse(bad).expect_err(bad);
            assert!(
                e.0.starts_with("invalid nested repetition operator"),
                "{bad}: {}",
                e.0
            );
        }
        for good in ["(a*)*", "a*?", "a+?b*", "(?:a{2}){3}"] {
            assert!(TopicRegex::parse(good).is_ok(), "{good} should parse");
        }
    }

    #[test]
    fn refuses_patterns_too_large_to_compile() {
        let e = TopicRegex::parse(r"\w{1000}").unwrap_err();
        assert!(e.0.contains("exceed"), "{}", e.0);
        assert!(TopicRegex::parse(r"[a-zA-Z0-9._-]{1,249}").is_ok());
        assert!(TopicRegex::parse(&"topic-[0-9]+|".repeat(500)).is_ok());
    }
}
