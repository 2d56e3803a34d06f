//! Rules in request and response bodies: the YAML rule schema, written as
//! JSON (or as YAML with `Content-Type: application/yaml`).
//!
//! Bodies are parsed with the configuration file's own types, so a rule sent
//! to the API is validated exactly like one in the file, and errors name the
//! line, column and field in the body. JSON bodies are first checked to be
//! strict JSON (YAML would accept more).

use super::http::{Request, Response};
use crate::compile::compile_rule;
use crate::config::{json_path_at, parse_as, ConfigError, RuleCfg, PROTO_NAMES};
use dataplane::classifier::{Action, PortRange, Rule};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::HashMap;

/// What error messages call a request body.
pub const BODY: &str = "request body";

/// `PUT /rules`: every rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesBody {
    /// The new rules.
    pub rules: Vec<RuleCfg>,
}

/// A 400 response for a located error in a body: `error` holds the whole
/// message, `line`, `column` and `field` its parts.
pub fn located(e: &ConfigError) -> Response {
    let mut v = json!({ "error": e.to_string(), "field": e.field, "message": e.message });
    if e.line > 0 {
        v["line"] = json!(e.line);
        v["column"] = json!(e.column);
    }
    Response::json(400, &v)
}

/// Parses a body of type `T` (JSON, or YAML when the content type says so).
pub fn parse_body<T: serde::de::DeserializeOwned>(req: &Request) -> Result<T, Response> {
    let yaml = matches!(req.content_type.as_str(), "application/yaml" | "application/x-yaml" | "text/yaml");
    // `curl -d` labels every body application/x-www-form-urlencoded: it is taken as JSON.
    let json = matches!(req.content_type.as_str(), "" | "application/json" | "application/x-www-form-urlencoded");
    if !yaml && !json {
        return Err(Response::error(
            415,
            format!("Content-Type `{}` is not accepted: send application/json or application/yaml", req.content_type),
        ));
    }
    let text = std::str::from_utf8(&req.body).map_err(|e| Response::error(400, format!("{BODY}: not UTF-8: {e}")))?;
    if text.trim().is_empty() {
        return Err(Response::error(400, format!("{BODY}: empty; this request needs a body")));
    }
    if json {
        if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(text) {
            let (line, column) = (e.line() as u32, e.column() as u32);
            let field = json_path_at(text, line, column);
            let msg = e.to_string();
            let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
            return Err(located(&ConfigError {
                file: BODY.into(),
                line,
                column,
                field,
                message: format!("malformed JSON: {msg}"),
            }));
        }
    }
    parse_as::<T>(text, BODY).map_err(|mut e| {
        if json && e.line > 0 {
            e.field = json_path_at(text, e.line, e.column);
        }
        located(&e)
    })
}

/// Port and chain names of the running configuration, by which rules refer to them.
pub struct Index {
    /// Port name to id.
    pub ports: HashMap<String, usize>,
    /// Chain name to id.
    pub chains: HashMap<String, usize>,
    /// Port names by id.
    pub port_names: Vec<String>,
    /// Chain names by id.
    pub chain_names: Vec<String>,
}

impl Index {
    /// The index of these port and chain names.
    pub fn new(port_names: Vec<String>, chain_names: Vec<String>) -> Index {
        let ix = |v: &[String]| v.iter().enumerate().map(|(i, n)| (n.clone(), i)).collect();
        Index { ports: ix(&port_names), chains: ix(&chain_names), port_names, chain_names }
    }

    /// Compiles a rule from a body (`prefix` is its field path in the body).
    pub fn compile(&self, r: &RuleCfg, prefix: &str) -> Result<Rule, ConfigError> {
        compile_rule(r, prefix, BODY, &self.ports, &self.chains)
    }

    /// A running rule in the schema it was written in.
    pub fn render(&self, r: &Rule) -> Value {
        let m = &r.matches;
        let mut o = Map::new();
        let range = |p: PortRange| if p.lo == p.hi { json!(p.lo) } else { json!(format!("{}-{}", p.lo, p.hi)) };
        if let Some(p) = m.in_port {
            o.insert("in_port".into(), json!(self.port_names.get(p as usize).cloned().unwrap_or(p.to_string())));
        }
        if let Some(v) = m.src_mac {
            o.insert("src_mac".into(), json!(v.to_string()));
        }
        if let Some(v) = m.dst_mac {
            o.insert("dst_mac".into(), json!(v.to_string()));
        }
        if let Some(v) = m.vlan {
            o.insert("vlan".into(), json!(v));
        }
        if let Some(v) = m.inner_vlan {
            o.insert("inner_vlan".into(), json!(v));
        }
        if let Some(v) = m.ethertype {
            let name = match v {
                0x0800 => json!("ipv4"),
                0x0806 => json!("arp"),
                0x86dd => json!("ipv6"),
                0x88cc => json!("lldp"),
                n => json!(n),
            };
            o.insert("ethertype".into(), name);
        }
        if let Some(v) = m.src_ip {
            o.insert("src".into(), json!(v.to_string()));
        }
        if let Some(v) = m.dst_ip {
            o.insert("dst".into(), json!(v.to_string()));
        }
        if let Some(v) = m.proto {
            let name = PROTO_NAMES.iter().find(|(_, n)| *n == u32::from(v)).map_or(json!(v), |(s, _)| json!(s));
            o.insert("proto".into(), name);
        }
        if let Some(v) = m.src_port {
            o.insert("src_port".into(), range(v));
        }
        if let Some(v) = m.dst_port {
            o.insert("dst_port".into(), range(v));
        }
        if let Some(v) = m.vni {
            o.insert("vni".into(), json!(v));
        }
        let mut rule = json!({ "name": r.name, "priority": r.priority, "match": o, "symmetric": r.symmetric });
        match r.action {
            Action::Chain(c) => {
                rule["chain"] = json!(self.chain_names.get(c as usize).cloned().unwrap_or(c.to_string()));
            }
            Action::Drop => rule["action"] = json!("drop"),
        }
        rule
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(content_type: &str, body: &str) -> Request {
        Request { method: "POST".into(), path: "/rules".into(), content_type: content_type.into(), body: body.into() }
    }

    fn index() -> Index {
        Index::new(vec!["vm-a".into(), "vm-b".into()], vec!["inspect".into()])
    }

    fn err(r: Response) -> Value {
        serde_json::from_slice(&r.body).unwrap()
    }

    #[test]
    fn a_rule_round_trips_through_json() {
        let body = r#"{"name": "web", "priority": 100, "symmetric": true, "chain": "inspect",
            "match": {"in_port": "vm-a", "src": "10.0.0.8/29", "dst": "10.0.0.21", "proto": "tcp",
                      "dst_port": "8000-8080", "src_port": 1234, "vlan": 7, "ethertype": "ipv4",
                      "src_mac": "02:00:00:00:00:01", "vni": 9}}"#;
        let cfg: RuleCfg = parse_body(&req("application/json", body)).unwrap();
        let rule = index().compile(&cfg, "").unwrap();
        let out = index().render(&rule);
        assert_eq!(out["match"]["dst"], "10.0.0.21/32");
        assert_eq!(out["match"]["dst_port"], "8000-8080");
        assert_eq!(out["match"]["src_port"], 1234);
        assert_eq!(out["chain"], "inspect");
        let again: RuleCfg = parse_body(&req("application/json", &out.to_string())).unwrap();
        assert_eq!(index().compile(&again, "").unwrap(), rule);
    }

    #[test]
    fn malformed_json_is_located() {
        let e = err(parse_body::<RuleCfg>(&req("", "{\n  \"name\": \"a\",\n  \"match\": {\"src\": }\n}")).unwrap_err());
        assert_eq!((e["line"].as_u64(), e["column"].as_u64()), (Some(3), Some(20)), "{e}");
        assert!(e["error"].as_str().unwrap().starts_with("request body:3:20: match.src: malformed JSON: "), "{e}");
    }

    #[test]
    fn unknown_fields_and_bad_values_name_the_field() {
        let e = err(parse_body::<RuleCfg>(&req("", r#"{"name": "a", "priority": 1, "colour": "red"}"#)).unwrap_err());
        assert!(e["error"].as_str().unwrap().contains("unknown field `colour`"), "{e}");
        let body = "{\n  \"name\": \"a\",\n  \"priority\": 1,\n  \"match\": {\"dst\": \"10.0.0.300/24\"}\n}";
        let e = err(parse_body::<RuleCfg>(&req("application/json", body)).unwrap_err());
        assert_eq!(e["field"], "match.dst", "{e}");
        assert_eq!(e["line"], 4, "{e}");
        assert!(e["error"].as_str().unwrap().contains("is not an IP network"), "{e}");
        let cfg: RuleCfg = parse_body(&req("", r#"{"name": "a", "priority": 1, "chain": "nope"}"#)).unwrap();
        let e = index().compile(&cfg, "").unwrap_err();
        assert_eq!(e.field, "chain");
        assert!(e.message.contains("unknown chain `nope` (known chains: inspect)"), "{e}");
    }

    #[test]
    fn yaml_bodies_and_wrong_content_types() {
        let cfg: RuleCfg =
            parse_body(&req("application/yaml", "name: a\npriority: 2\naction: drop\nmatch: { proto: udp }\n"))
                .unwrap();
        assert_eq!(index().compile(&cfg, "").unwrap().action, Action::Drop);
        assert_eq!(parse_body::<RuleCfg>(&req("text/html", "<p>")).unwrap_err().status, 415);
        let curl_default =
            req("application/x-www-form-urlencoded", r#"{"name": "a", "priority": 1, "action": "drop"}"#);
        assert!(parse_body::<RuleCfg>(&curl_default).is_ok());
        assert_eq!(parse_body::<RuleCfg>(&req("", "  ")).unwrap_err().status, 400);
        // YAML that is not JSON is refused as JSON.
        assert_eq!(parse_body::<RuleCfg>(&req("application/json", "name: a\n")).unwrap_err().status, 400);
    }
}
