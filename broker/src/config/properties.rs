//! Java `.properties` files and the apache/kafka image's `KAFKA_*` environment convention.

/// Parses the subset of the Java properties format that server.properties files use:
/// `key=value` or `key: value`, `#`/`!` comments, blank lines, and `\` line continuations.
pub fn parse(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut pending = String::new();
    for raw in text.lines() {
        let line = raw.trim_start();
        if pending.is_empty() && (line.is_empty() || line.starts_with('#') || line.starts_with('!')) {
            continue;
        }
        if let Some(cont) = line.strip_suffix('\\') {
            pending.push_str(cont);
            continue;
        }
        pending.push_str(line);
        let entry = std::mem::take(&mut pending);
        let split = entry.find(['=', ':']).unwrap_or(entry.len());
        let key = entry[..split].trim();
        let value = entry.get(split + 1..).unwrap_or("").trim();
        if !key.is_empty() {
            out.push((key.to_string(), value.to_string()));
        }
    }
    out
}

/// Environment variables of the apache/kafka image that configure the JVM or the image itself,
/// not the broker.
const NOT_BROKER_SETTINGS: &[&str] = &[
    "KAFKA_HEAP_OPTS",
    "KAFKA_JVM_PERFORMANCE_OPTS",
    "KAFKA_GC_LOG_OPTS",
    "KAFKA_LOG4J_OPTS",
    "KAFKA_LOG4J_LOGGERS",
    "KAFKA_LOG4J_ROOT_LOGLEVEL",
    "KAFKA_JMX_OPTS",
    "KAFKA_JMX_PORT",
    "KAFKA_OPTS",
    "KAFKA_DEBUG",
    "KAFKA_HOME",
    "KAFKA_VERSION",
    "KAFKA_TOOLS_LOG4J_LOGLEVEL",
];

/// Translates `KAFKA_LOG_DIRS` to `log.dirs`: after the prefix, `___` is `-`, `__` is `_`, `_`
/// is `.`, and the result is lower-cased. Returns `None` for variables that are not settings.
pub fn env_to_key(name: &str) -> Option<String> {
    let rest = name.strip_prefix("KAFKA_")?;
    if rest.is_empty() || NOT_BROKER_SETTINGS.contains(&name) {
        return None;
    }
    let mut key = String::with_capacity(rest.len());
    let mut underscores = 0;
    let flush = |key: &mut String, n: usize| {
        // Runs longer than three are read greedily, as successive `___`, `__`, `_` groups.
        let mut n = n;
        while n > 0 {
            let take = n.min(3);
            key.push(match take {
                3 => '-',
                2 => '_',
                _ => '.',
            });
            n -= take;
        }
    };
    for c in rest.chars() {
        if c == '_' {
            underscores += 1;
        } else {
            flush(&mut key, underscores);
            underscores = 0;
            key.push(c.to_ascii_lowercase());
        }
    }
    flush(&mut key, underscores);
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names_translate_like_the_apache_kafka_image() {
        assert_eq!(env_to_key("KAFKA_LOG_DIRS").as_deref(), Some("log.dirs"));
        assert_eq!(env_to_key("KAFKA_NODE_ID").as_deref(), Some("node.id"));
        assert_eq!(env_to_key("KAFKA_FOO__BAR").as_deref(), Some("foo_bar"));
        assert_eq!(env_to_key("KAFKA_FOO___BAR").as_deref(), Some("foo-bar"));
        assert_eq!(env_to_key("KAFKA_HEAP_OPTS"), None);
        assert_eq!(env_to_key("PATH"), None);
    }

    #[test]
    fn properties_with_comments_separators_and_continuations() {
        let text = "# comment\n! also\nnode.id=3\nlog.dirs : /tmp/a\nlisteners=PLAINTEXT://:9092,\\\n   CONTROLLER://:9093\n\nempty=\n";
        let parsed = parse(text);
        assert_eq!(
            parsed,
            vec![
                ("node.id".into(), "3".into()),
                ("log.dirs".into(), "/tmp/a".into()),
                ("listeners".into(), "PLAINTEXT://:9092,CONTROLLER://:9093".into()),
                ("empty".into(), "".into()),
            ]
        );
    }
}
