//! Reading manifests back, strictly.
//!
//! k8s-openapi's deserialisers, like the API server's default decoder, silently skip
//! fields they do not know, so `terminationGracePeriodSecond: 5` would parse and
//! simply not be there. Here every document is parsed into its type, serialised
//! again and compared with the document: whatever did not survive is an error that
//! names its path.

use crate::objects::Object;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

const KINDS: &str = "Namespace, Deployment, Service, Job, ConfigMap";

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("document {document}: invalid YAML: {source}")]
    Yaml {
        document: usize,
        #[source]
        source: serde_norway::Error,
    },
    #[error("document {document}: expected a mapping with `apiVersion` and `kind`")]
    NotAMapping { document: usize },
    #[error("document {document}: no `kind`")]
    MissingKind { document: usize },
    #[error("document {document}: unknown kind `{kind}`; expected one of: {KINDS}")]
    UnknownKind { document: usize, kind: String },
    #[error("document {document} ({kind} {name}): {source}")]
    Invalid {
        document: usize,
        kind: String,
        name: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("document {document} ({kind} {name}): {}", problems.join("; "))]
    NotPreserved { document: usize, kind: String, name: String, problems: Vec<String> },
}

/// Parses multi-document YAML into typed objects, rejecting unknown kinds and any
/// field the types do not carry. Documents are numbered from 1 in errors; empty
/// documents (a trailing `---`, a comment-only header) are skipped.
pub fn parse_strict(yaml: &str) -> Result<Vec<Object>, ManifestError> {
    let mut objects = Vec::new();
    for (i, de) in serde_norway::Deserializer::from_str(yaml).enumerate() {
        let document = i + 1;
        let doc = Value::deserialize(de).map_err(|source| ManifestError::Yaml { document, source })?;
        if doc.is_null() {
            continue;
        }
        let Value::Object(map) = &doc else { return Err(ManifestError::NotAMapping { document }) };
        let kind = match map.get("kind") {
            Some(Value::String(k)) => k.clone(),
            _ => return Err(ManifestError::MissingKind { document }),
        };
        let name = doc.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("<unnamed>").to_string();
        let parsed = match kind.as_str() {
            "Namespace" => typed(&doc, Object::Namespace as fn(Box<Namespace>) -> Object),
            "Deployment" => typed(&doc, Object::Deployment as fn(Box<Deployment>) -> Object),
            "Service" => typed(&doc, Object::Service as fn(Box<Service>) -> Object),
            "Job" => typed(&doc, Object::Job as fn(Box<Job>) -> Object),
            "ConfigMap" => typed(&doc, Object::ConfigMap as fn(Box<ConfigMap>) -> Object),
            _ => return Err(ManifestError::UnknownKind { document, kind }),
        };
        let (object, back) = parsed.map_err(|source| ManifestError::Invalid {
            document,
            kind: kind.clone(),
            name: name.clone(),
            source,
        })?;
        let mut problems = Vec::new();
        compare(&doc, &back, "", &mut problems);
        if !problems.is_empty() {
            return Err(ManifestError::NotPreserved { document, kind, name, problems });
        }
        objects.push(object);
    }
    Ok(objects)
}

/// Parses `doc` as `T` and returns it with its re-serialised form.
fn typed<T: DeserializeOwned + Serialize>(
    doc: &Value,
    wrap: fn(Box<T>) -> Object,
) -> Result<(Object, Value), serde_json::Error> {
    let t: T = serde_json::from_value(doc.clone())?;
    let back = serde_json::to_value(&t)?;
    Ok((wrap(Box::new(t)), back))
}

/// Records every difference between the document and its typed round trip.
/// Normalised away: explicit nulls in the document (the types drop them) and empty
/// values the types fill in for required fields the document left out (an absent
/// `containers` comes back as `[]`).
fn compare(doc: &Value, back: &Value, path: &str, problems: &mut Vec<String>) {
    match (doc, back) {
        (Value::Object(d), Value::Object(b)) => {
            for (key, dv) in d {
                if dv.is_null() {
                    continue;
                }
                let p = join(path, key);
                match b.get(key) {
                    None => problems.push(format!("`{p}` is not a field of this type (misspelt or unknown)")),
                    Some(bv) => compare(dv, bv, &p, problems),
                }
            }
            for (key, bv) in b {
                if d.get(key).is_none_or(Value::is_null) && !is_empty(bv) {
                    problems.push(format!("`{}` is missing from the document", join(path, key)));
                }
            }
        }
        (Value::Array(d), Value::Array(b)) if d.len() == b.len() => {
            for (i, (dv, bv)) in d.iter().zip(b).enumerate() {
                compare(dv, bv, &format!("{path}[{i}]"), problems);
            }
        }
        _ if doc == back => {}
        _ => problems.push(format!("`{path}` is {doc} in the document but {back} after parsing")),
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::String(s) => s.is_empty(),
        Value::Bool(_) | Value::Number(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: api
spec:
  selector:
    matchLabels:
      app: api
  template:
    metadata:
      labels:
        app: api
    spec:
      terminationGracePeriodSeconds: 12
      containers:
      - name: api
        image: zerodrop-api:init-dev
";

    #[test]
    fn a_well_formed_document_parses() {
        let objects = parse_strict(DEPLOYMENT).unwrap();
        assert_eq!(objects.len(), 1);
        assert_eq!((objects[0].kind(), objects[0].name()), ("Deployment", "api"));
    }

    #[test]
    fn a_misspelt_field_is_rejected_with_its_path() {
        let yaml = DEPLOYMENT.replace("terminationGracePeriodSeconds", "terminationGracePeriodSecond");
        let err = parse_strict(&yaml).unwrap_err().to_string();
        assert!(err.contains("spec.template.spec.terminationGracePeriodSecond"), "{err}");
        assert!(err.contains("Deployment api"), "{err}");
    }

    #[test]
    fn an_unknown_container_field_is_rejected_with_its_path() {
        let yaml = DEPLOYMENT.replace("        image:", "        imagePullPolice: Always\n        image:");
        let err = parse_strict(&yaml).unwrap_err().to_string();
        assert!(err.contains("spec.template.spec.containers[0].imagePullPolice"), "{err}");
    }

    #[test]
    fn unknown_kinds_and_wrong_types_are_errors() {
        let err = parse_strict("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n").unwrap_err();
        assert!(matches!(&err, ManifestError::UnknownKind { kind, .. } if kind == "Pod"), "{err}");
        let err = parse_strict(&DEPLOYMENT.replace("12", "twelve")).unwrap_err();
        assert!(matches!(err, ManifestError::Invalid { .. }), "{err}");
        let err = parse_strict(&DEPLOYMENT.replace("apps/v1", "v1")).unwrap_err();
        assert!(matches!(err, ManifestError::Invalid { .. }), "{err}");
        let err = parse_strict("apiVersion: v1\nmetadata: {}\n").unwrap_err();
        assert!(matches!(err, ManifestError::MissingKind { document: 1 }), "{err}");
    }

    #[test]
    fn nulls_empty_documents_and_later_documents_are_handled() {
        let yaml = format!("# header\n---\n{DEPLOYMENT}---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: zerodrop\n  labels: null\n---\n");
        let objects = parse_strict(&yaml).unwrap();
        assert_eq!(objects.iter().map(Object::kind).collect::<Vec<_>>(), ["Deployment", "Namespace"]);
        let bad = format!("{DEPLOYMENT}---\napiVersion: v1\nkind: Namespace\nmetadata:\n  nmae: zerodrop\n");
        let err = parse_strict(&bad).unwrap_err().to_string();
        assert!(err.starts_with("document 2") && err.contains("`metadata.nmae`"), "{err}");
    }
}
