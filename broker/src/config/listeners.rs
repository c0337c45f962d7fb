//! `listeners` / `advertised.listeners` parsing and the apache/kafka image's derivation rules.

use std::fmt;

/// One `NAME://host:port` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerSpec {
    pub name: String,
    pub host: String,
    pub port: u16,
}

impl fmt::Display for ListenerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "{}://[{}]:{}", self.name, self.host, self.port)
        } else {
            write!(f, "{}://{}:{}", self.name, self.host, self.port)
        }
    }
}

impl ListenerSpec {
    pub fn parse(s: &str) -> Result<ListenerSpec, String> {
        let (name, rest) = s
            .trim()
            .split_once("://")
            .ok_or_else(|| format!("{s:?} is not NAME://host:port"))?;
        let (host, port) = rest
            .rsplit_once(':')
            .ok_or_else(|| format!("{s:?} has no port"))?;
        let port: u16 = port.parse().map_err(|_| format!("{s:?} has an invalid port"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if name.is_empty() {
            return Err(format!("{s:?} has no listener name"));
        }
        Ok(ListenerSpec {
            name: name.to_ascii_uppercase(),
            host: host.to_string(),
            port,
        })
    }

    /// The address to bind: an empty host means every interface, as in Kafka.
    pub fn bind_host(&self) -> &str {
        if self.host.is_empty() {
            "0.0.0.0"
        } else {
            &self.host
        }
    }
}

pub fn parse_list(s: &str) -> Result<Vec<ListenerSpec>, String> {
    let list: Vec<ListenerSpec> = s
        .split(',')
        .filter(|e| !e.trim().is_empty())
        .map(ListenerSpec::parse)
        .collect::<Result<_, _>>()?;
    for (i, l) in list.iter().enumerate() {
        if list[..i].iter().any(|o| o.name == l.name) {
            return Err(format!("listener name {} appears twice", l.name));
        }
    }
    Ok(list)
}

/// Fills in whichever of listeners / advertised.listeners is missing. Without listeners, bind
/// every advertised one on all interfaces (what the apache/kafka image does); without advertised
/// listeners, advertise each bound one, with wildcard hosts replaced by localhost.
pub fn resolve(
    listeners: Option<Vec<ListenerSpec>>,
    advertised: Option<Vec<ListenerSpec>>,
) -> (Vec<ListenerSpec>, Vec<ListenerSpec>) {
    let listeners = match (&listeners, &advertised) {
        (Some(l), _) => l.clone(),
        (None, Some(a)) => a
            .iter()
            .map(|a| ListenerSpec {
                host: "0.0.0.0".to_string(),
                ..a.clone()
            })
            .collect(),
        (None, None) => vec![ListenerSpec {
            name: "PLAINTEXT".into(),
            host: "0.0.0.0".into(),
            port: 9092,
        }],
    };
    let advertised = advertised.unwrap_or_else(|| {
        listeners
            .iter()
            .map(|l| {
                let host = match l.host.as_str() {
                    "" | "0.0.0.0" | "::" => "localhost".to_string(),
                    h => h.to_string(),
                };
                ListenerSpec { host, ..l.clone() }
            })
            .collect()
    });
    (listeners, advertised)
}

/// The security protocol a listener name maps to.
pub fn security_protocol(map: &str, listener: &str) -> Option<String> {
    map.split(',')
        .filter_map(|e| e.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case(listener))
        .map(|(_, p)| p.trim().to_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_hosts_and_empty_hosts() {
        let l = parse_list("PLAINTEXT://:9092,CONTROLLER://localhost:9093").unwrap();
        assert_eq!(l[0].bind_host(), "0.0.0.0");
        assert_eq!(l[1].host, "localhost");
        assert_eq!(l[1].port, 9093);
        assert!(parse_list("PLAINTEXT://a:1,PLAINTEXT://b:2").is_err());
        assert!(ListenerSpec::parse("localhost:9092").is_err());
    }

    #[test]
    fn security_protocol_lookup() {
        assert_eq!(
            security_protocol("PLAINTEXT:PLAINTEXT,DOCKER:PLAINTEXT", "DOCKER").as_deref(),
            Some("PLAINTEXT")
        );
        assert_eq!(security_protocol("PLAINTEXT:PLAINTEXT", "SSL"), None);
    }
}
