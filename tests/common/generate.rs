//! Seeded generation of pod placement specs for the differential and ground-truth
//! tests: nodeSelector, required and preferred node affinity with every operator,
//! matchFields, nodeName, and their combinations, over the test topology's labels.
//! The seed comes from `ENCLAVE_TEST_SEED` (to replay a failure) or the clock, and
//! every failure message names it.

use serde_json::{Value, json};

/// A small, fast, seedable generator (xorshift64*): the tests need reproducibility,
/// not cryptographic quality.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// The seed of this run: `ENCLAVE_TEST_SEED`, or the clock.
pub fn seed() -> u64 {
    std::env::var("ENCLAVE_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        })
}

pub const SITE: &str = "node-restriction.kubernetes.io/enclave-site";
const ZONE: &str = "topology.kubernetes.io/zone";
const REGION: &str = "topology.kubernetes.io/region";
const HOSTNAME: &str = "kubernetes.io/hostname";
const NODES: &[&str] = &[
    "dublin-a",
    "dublin-b",
    "norway-a",
    "virginia-a",
    "virginia-b",
    "mars-1",
];

fn values_of(key: &str) -> &'static [&'static str] {
    match key {
        SITE => &["dublin", "norway", "virginia", "ohio"],
        ZONE => &[
            "eu-west-1a",
            "eu-west-1b",
            "eu-north-1a",
            "us-east-1a",
            "us-east-1b",
        ],
        REGION => &["eu-west-1", "eu-north-1", "us-east-1"],
        HOSTNAME => NODES,
        _ => &["ssd", "1", "7"],
    }
}

const KEYS: &[&str] = &[SITE, SITE, ZONE, REGION, HOSTNAME, "disk"];

/// A requirement. `strict`: Gt/Lt bounds are always integers — for preferred terms,
/// where kube-scheduler fails while scoring on an unparsable bound, but skips scoring
/// when a single node fits: a broken pod behaves differently with one candidate node
/// than with three, whatever admission did.
fn requirement_with(rng: &mut Rng, strict: bool) -> Value {
    let key = *rng.pick(KEYS);
    let operator = *rng.pick(&["In", "In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"]);
    let mut req = json!({"key": key, "operator": operator});
    match operator {
        "In" | "NotIn" => {
            let n = 1 + rng.below(3);
            let mut values: Vec<&str> = (0..n).map(|_| *rng.pick(values_of(key))).collect();
            values.dedup();
            req["values"] = json!(values);
        }
        "Gt" | "Lt" if strict => req["values"] = json!([rng.pick(&["0", "5"])]),
        "Gt" | "Lt" => req["values"] = json!([rng.pick(&["0", "5", "x"])]),
        _ => {}
    }
    req
}

fn requirement(rng: &mut Rng) -> Value {
    requirement_with(rng, false)
}

fn term(rng: &mut Rng) -> Value {
    let mut term = json!({});
    let n = rng.below(4);
    if n > 0 {
        term["matchExpressions"] = Value::Array((0..n).map(|_| requirement(rng)).collect());
    }
    if rng.chance(20) {
        let operator = if rng.chance(70) { "In" } else { "NotIn" };
        term["matchFields"] =
            json!([{"key": "metadata.name", "operator": operator, "values": [rng.pick(NODES)]}]);
    }
    if term.as_object().is_some_and(|o| o.is_empty()) {
        term["matchExpressions"] = json!([requirement(rng)]);
    }
    term
}

/// One pod spec's placement fields (merge into a spec with containers).
pub fn placement(rng: &mut Rng) -> Value {
    let mut spec = json!({});
    if rng.chance(30) {
        let mut selector = serde_json::Map::new();
        for _ in 0..1 + rng.below(2) {
            let key = *rng.pick(&[SITE, ZONE, REGION]);
            selector.insert(key.into(), json!(rng.pick(values_of(key))));
        }
        spec["nodeSelector"] = Value::Object(selector);
    }
    let mut node_affinity = json!({});
    if rng.chance(60) {
        let terms: Vec<Value> = (0..1 + rng.below(3)).map(|_| term(rng)).collect();
        node_affinity["requiredDuringSchedulingIgnoredDuringExecution"] =
            json!({"nodeSelectorTerms": terms});
    }
    if rng.chance(30) {
        node_affinity["preferredDuringSchedulingIgnoredDuringExecution"] = json!([{"weight": 1 + rng.below(100), "preference": {"matchExpressions": [requirement_with(rng, true)]}}]);
    }
    if node_affinity.as_object().is_some_and(|o| !o.is_empty()) {
        spec["affinity"] = json!({"nodeAffinity": node_affinity});
    }
    if rng.chance(8) {
        spec["nodeName"] = json!(rng.pick(NODES));
    }
    spec
}

/// A whole pod.
pub fn pod(name: &str, placement: &Value) -> Value {
    let mut spec = placement.clone();
    spec["containers"] = json!([{"name": "app", "image": "registry.k8s.io/pause:3.10"}]);
    spec["terminationGracePeriodSeconds"] = json!(0);
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec})
}

/// Side doors for the differential test (issue 21): `spec.hostNetwork` and up to three
/// volumes, each contained, a door, an inline CSI volume or a generic ephemeral volume
/// of some class (by field, beta annotation, both, or neither). The enclave of the test
/// allows `hostPath` and the CSI driver `allowed.csi.example.com`.
pub fn side_doors(rng: &mut Rng, spec: &mut Value) {
    if rng.chance(20) {
        spec["hostNetwork"] = json!(true);
    }
    let ephemeral = |annotation: Option<&str>, class: Option<&str>| {
        let mut template = json!({"spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}});
        if let Some(class) = class {
            template["spec"]["storageClassName"] = json!(class);
        }
        if let Some(annotation) = annotation {
            template["metadata"] =
                json!({"annotations": {"volume.beta.kubernetes.io/storage-class": annotation}});
        }
        json!({"ephemeral": {"volumeClaimTemplate": template}})
    };
    let pool = [
        json!({"configMap": {"name": "c"}}),
        json!({"secret": {"secretName": "s"}}),
        json!({"emptyDir": {}}),
        json!({"persistentVolumeClaim": {"claimName": "data"}}),
        json!({"nfs": {"server": "198.51.100.7", "path": "/export"}}),
        json!({"iscsi": {"targetPortal": "198.51.100.7:3260", "iqn": "iqn.2001-04.com.example:storage", "lun": 0}}),
        json!({"rbd": {"monitors": ["198.51.100.7:6789"], "image": "data"}}),
        json!({"hostPath": {"path": "/var/lib/data"}}),
        json!({"csi": {"driver": "allowed.csi.example.com"}}),
        json!({"csi": {"driver": "nfs.csi.k8s.io"}}),
        ephemeral(None, Some("eu-dublin-ssd")),
        ephemeral(None, Some("us-east-ssd")),
        ephemeral(Some("us-east-ssd"), Some("eu-dublin-ssd")),
        ephemeral(Some("eu-norway-ssd"), None),
        ephemeral(Some("us-east-ssd"), None),
        ephemeral(None, None),
    ];
    let count = rng.below(4);
    if count == 0 {
        return;
    }
    let volumes: Vec<Value> = (0..count)
        .map(|i| {
            let mut volume = rng.pick(&pool).clone();
            volume["name"] = json!(format!("v{i}"));
            volume
        })
        .collect();
    spec["volumes"] = json!(volumes);
}
