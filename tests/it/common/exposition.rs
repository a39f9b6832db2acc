//! A small reader of the OpenMetrics text `/metrics` serves: families with their
//! type and unit, and every sample with its labels — enough to check names, types
//! and units, and that what the dashboard and alert rules use is exported.

use std::collections::BTreeMap;

#[derive(Debug, Default, Clone)]
pub struct Family {
    pub kind: String,
    pub unit: Option<String>,
    pub help: bool,
    /// (sample name, labels, value)
    pub samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

/// Families by name, in the order `/metrics` lists them.
#[derive(Debug, Default)]
pub struct Exposition {
    pub families: BTreeMap<String, Family>,
}

impl Exposition {
    /// Every sample name (`x_total`, `x_bucket`, …) exported.
    pub fn sample_names(&self) -> std::collections::BTreeSet<String> {
        self.families
            .values()
            .flat_map(|f| f.samples.iter().map(|(n, _, _)| n.clone()))
            .collect()
    }

    /// The value of the sample `name` whose labels include `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.families.values().find_map(|f| {
            f.samples.iter().find_map(|(n, l, v)| {
                (n == name
                    && labels
                        .iter()
                        .all(|(k, val)| l.get(*k).map(String::as_str) == Some(*val)))
                .then_some(*v)
            })
        })
    }
}

fn labels(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = text;
    while let Some((key, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, e)) = chars.next() {
                        value.push(match e {
                            'n' => '\n',
                            other => other,
                        });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.insert(key.trim_start_matches(',').trim().to_owned(), value);
        rest = &after[end..];
    }
    out
}

/// Parse an exposition; panics on a line it does not understand.
pub fn parse(text: &str) -> Exposition {
    let mut exposition = Exposition::default();
    let mut current: Option<String> = None;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if line == "# EOF" {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (what, name, value) = (
                parts.next().unwrap_or(""),
                parts.next().unwrap_or("").to_owned(),
                parts.next().unwrap_or(""),
            );
            let family = exposition.families.entry(name.clone()).or_default();
            match what {
                "TYPE" => family.kind = value.to_owned(),
                "UNIT" => family.unit = Some(value.to_owned()),
                "HELP" => family.help = true,
                other => panic!("unknown comment {other:?} in {line:?}"),
            }
            current = Some(name);
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("sample without a value: {line:?}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|e| panic!("bad value in {line:?}: {e}")),
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (name.to_owned(), labels(rest.trim_end_matches('}'))),
            None => (series.to_owned(), BTreeMap::new()),
        };
        let family = current
            .as_ref()
            .filter(|f| name.starts_with(f.as_str()))
            .unwrap_or_else(|| panic!("sample {name} outside its family"))
            .clone();
        exposition
            .families
            .entry(family)
            .or_default()
            .samples
            .push((name, labels, value));
    }
    exposition
}
