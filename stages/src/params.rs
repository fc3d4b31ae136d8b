//! Typed stage parameters. A stage lists [`ParamSpec`]s; the engine checks the YAML against them,
//! fills defaults, and hashes the canonical values into the cache key.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::StageError;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ParamType {
    Int,
    Float,
    Str,
    Bool,
    /// A path to a file or folder; relative paths are resolved against the project root.
    Path,
    Enum(&'static [&'static str]),
    FloatList,
    IntList,
    StrList,
}

impl ParamType {
    pub fn describe(&self) -> String {
        match self {
            ParamType::Int => "an integer".into(),
            ParamType::Float => "a number".into(),
            ParamType::Str => "a string".into(),
            ParamType::Bool => "true or false".into(),
            ParamType::Path => "a path".into(),
            ParamType::Enum(opts) => format!("one of {}", opts.join(", ")),
            ParamType::FloatList => "a list of numbers".into(),
            ParamType::IntList => "a list of integers".into(),
            ParamType::StrList => "a list of strings".into(),
        }
    }

    /// Checks a value and returns its canonical form (integers given for floats become floats,
    /// so `lr: 1` and `lr: 1.0` hash the same).
    pub fn check(&self, v: &Value) -> Result<Value, StageError> {
        let bad = || {
            Err(StageError::Other(format!(
                "expected {}, got {}",
                self.describe(),
                short(v)
            )))
        };
        match self {
            ParamType::Int => match v.as_i64() {
                Some(_) => Ok(v.clone()),
                None => match v.as_f64() {
                    Some(f) if f.fract() == 0.0 && f.abs() < 9e15 => Ok(Value::from(f as i64)),
                    _ => bad(),
                },
            },
            ParamType::Float => match v.as_f64() {
                Some(f) if f.is_finite() => Ok(float(f)),
                _ => bad(),
            },
            ParamType::Str | ParamType::Path => match v {
                Value::String(_) => Ok(v.clone()),
                // `--set stage.sem_vision=4` and `names: 42` mean the text, as YAML spells it.
                Value::Number(n) if matches!(self, ParamType::Str) => {
                    Ok(Value::String(n.to_string()))
                }
                _ => bad(),
            },
            ParamType::Bool => match v {
                Value::Bool(_) => Ok(v.clone()),
                _ => bad(),
            },
            ParamType::Enum(opts) => match v.as_str() {
                Some(s) if opts.contains(&s) => Ok(v.clone()),
                _ => bad(),
            },
            ParamType::FloatList | ParamType::IntList | ParamType::StrList => {
                let Some(items) = v.as_array() else {
                    return bad();
                };
                let inner = match self {
                    ParamType::FloatList => ParamType::Float,
                    ParamType::IntList => ParamType::Int,
                    _ => ParamType::Str,
                };
                items
                    .iter()
                    .map(|i| inner.check(i))
                    .collect::<Result<Vec<_>, _>>()
                    .map(Value::Array)
                    .or_else(|_| bad())
            }
        }
    }
}

fn float(f: f64) -> Value {
    serde_json::Number::from_f64(f)
        .map(Value::Number)
        .unwrap_or(Value::Null)
}

fn describe_range(lo: f64, hi: f64) -> String {
    match (lo, hi) {
        (lo, hi) if lo == f64::MIN_POSITIVE && hi.is_infinite() => "above 0".into(),
        (lo, hi) if hi.is_infinite() => format!("at least {lo}"),
        (lo, hi) => format!("in {lo}..={hi}"),
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 40 {
        format!("{}…", s.chars().take(40).collect::<String>())
    } else {
        s
    }
}

/// The `device` param of the kinds that run libtorch: where it runs, never part of the key.
pub const DEVICE: ParamSpec = ParamSpec::new(
    "device",
    ParamType::Enum(&["auto", "cpu", "cuda"]),
    Some("\"auto\""),
    "auto: the GPU the scheduler gave the stage (resources.gpus), else the CPU; cuda: refuse \
     to run without one. Not in the key: the device used is recorded with the artifact",
)
.unkeyed();

#[derive(Debug, Clone, Copy)]
pub struct ParamSpec {
    pub name: &'static str,
    pub ty: ParamType,
    /// JSON text of the default; `None` makes the param required.
    pub default: Option<&'static str>,
    pub doc: &'static str,
    /// Inclusive bounds of a number (each number of a list), checked when the pipeline plans,
    /// so a value no clip could run with is a config error at its line, not a failure per clip.
    pub range: Option<(f64, f64)>,
    /// False for a param that says how a stage runs, not what it computes (the device): it
    /// stays out of the key, so a cache filled on a GPU serves a CPU run and back.
    pub keyed: bool,
    /// True for a param added to a kind after caches were filled: at its default it stays out
    /// of the key, so those caches keep their keys; set otherwise, it is keyed.
    pub keyed_if_set: bool,
}

impl ParamSpec {
    pub const fn new(
        name: &'static str,
        ty: ParamType,
        default: Option<&'static str>,
        doc: &'static str,
    ) -> Self {
        ParamSpec {
            name,
            ty,
            default,
            doc,
            range: None,
            keyed: true,
            keyed_if_set: false,
        }
    }

    /// Keys the param only where it differs from its default (see [`ParamSpec::keyed_if_set`]).
    pub const fn keyed_if_set(mut self) -> Self {
        self.keyed_if_set = true;
        self
    }

    /// Leaves the param out of the key (see [`ParamSpec::keyed`]).
    pub const fn unkeyed(mut self) -> Self {
        self.keyed = false;
        self
    }

    /// Bounds a number param: `lo..=hi`.
    pub const fn range(mut self, lo: f64, hi: f64) -> Self {
        self.range = Some((lo, hi));
        self
    }

    /// At least `lo`.
    pub const fn min(self, lo: f64) -> Self {
        self.range(lo, f64::INFINITY)
    }

    /// Above zero (a rate, a scale, a length in seconds).
    pub const fn positive(self) -> Self {
        self.range(f64::MIN_POSITIVE, f64::INFINITY)
    }

    /// Checks a given value: its type, then its range. Returns the canonical form.
    pub fn check(&self, v: &Value) -> Result<Value, StageError> {
        let v = self.ty.check(v)?;
        let Some((lo, hi)) = self.range else {
            return Ok(v);
        };
        let nums: Vec<f64> = match &v {
            Value::Array(a) => a.iter().filter_map(Value::as_f64).collect(),
            other => other.as_f64().into_iter().collect(),
        };
        match nums.iter().find(|x| !(lo..=hi).contains(*x)) {
            Some(x) => Err(StageError::Other(format!(
                "{x} is not {}",
                describe_range(lo, hi)
            ))),
            None => Ok(v),
        }
    }

    /// The type, and the range if there is one: `an integer, at least 1`.
    pub fn describe(&self) -> String {
        match self.range {
            Some((lo, hi)) => format!("{}, {}", self.ty.describe(), describe_range(lo, hi)),
            None => self.ty.describe(),
        }
    }

    pub fn default_value(&self) -> Option<Value> {
        self.default.map(|d| {
            let v: Value = serde_json::from_str(d).expect("param default is valid JSON");
            self.ty
                .check(&v)
                .expect("param default has the declared type")
        })
    }
}

/// Checked, canonical param values with every default filled in.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Params(pub BTreeMap<String, Value>);

impl Params {
    pub fn get(&self, name: &str) -> Result<&Value, StageError> {
        self.0
            .get(name)
            .ok_or_else(|| StageError::param(name, "missing"))
    }
    pub fn str(&self, name: &str) -> Result<&str, StageError> {
        self.get(name)?
            .as_str()
            .ok_or_else(|| StageError::param(name, "not a string"))
    }
    pub fn f64(&self, name: &str) -> Result<f64, StageError> {
        self.get(name)?
            .as_f64()
            .ok_or_else(|| StageError::param(name, "not a number"))
    }
    pub fn i64(&self, name: &str) -> Result<i64, StageError> {
        self.get(name)?
            .as_i64()
            .ok_or_else(|| StageError::param(name, "not an integer"))
    }
    pub fn bool(&self, name: &str) -> Result<bool, StageError> {
        self.get(name)?
            .as_bool()
            .ok_or_else(|| StageError::param(name, "not a boolean"))
    }
    pub fn f64_list(&self, name: &str) -> Result<Vec<f64>, StageError> {
        self.get(name)?
            .as_array()
            .and_then(|a| a.iter().map(|v| v.as_f64()).collect())
            .ok_or_else(|| StageError::param(name, "not a list of numbers"))
    }
    pub fn str_list(&self, name: &str) -> Result<Vec<String>, StageError> {
        self.get(name)?
            .as_array()
            .and_then(|a| a.iter().map(|v| v.as_str().map(str::to_string)).collect())
            .ok_or_else(|| StageError::param(name, "not a list of strings"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_checked_after_the_type() {
        let p = ParamSpec::new("crop", ParamType::Int, Some("64"), "").range(8.0, 1024.0);
        assert!(p.check(&Value::from(64)).is_ok());
        let e = p.check(&Value::from(4)).unwrap_err().to_string();
        assert_eq!(e, "4 is not in 8..=1024");
        assert!(p.check(&Value::from("4")).is_err());
        let lr = ParamSpec::new("lr", ParamType::Float, None, "").positive();
        assert_eq!(
            lr.check(&Value::from(0)).unwrap_err().to_string(),
            "0 is not above 0"
        );
        let l = ParamSpec::new("t", ParamType::FloatList, None, "").range(0.0, 1.0);
        assert!(l.check(&serde_json::json!([0.6, 0.7])).is_ok());
        assert!(l.check(&serde_json::json!([0.6, 1.7])).is_err());
        assert_eq!(p.describe(), "an integer, in 8..=1024");
    }

    #[test]
    fn ints_given_for_floats_hash_like_floats() {
        let a = ParamType::Float.check(&Value::from(1)).unwrap();
        let b = ParamType::Float.check(&Value::from(1.0)).unwrap();
        assert_eq!(a.to_string(), b.to_string());
    }

    #[test]
    fn enum_and_list_checks() {
        let t = ParamType::Enum(&["a", "b"]);
        assert!(t.check(&Value::from("a")).is_ok());
        let e = t.check(&Value::from("c")).unwrap_err();
        assert!(e.to_string().contains("one of a, b"), "{e}");
        assert!(ParamType::FloatList
            .check(&serde_json::json!([1, 2.5]))
            .is_ok());
        assert!(ParamType::FloatList
            .check(&serde_json::json!([1, "x"]))
            .is_err());
        assert!(ParamType::Int.check(&Value::from(2.5)).is_err());
    }

    #[test]
    fn a_number_given_for_a_string_is_its_text() {
        let four = ParamType::Str.check(&Value::from(4)).unwrap();
        assert_eq!(four, Value::from("4"));
        assert_eq!(four, ParamType::Str.check(&Value::from("4")).unwrap());
        assert!(ParamType::Str.check(&Value::from(true)).is_err());
        assert!(ParamType::Path.check(&Value::from(4)).is_err());
    }
}
