//! The move's state machine against a small simulated cluster: the PV controller's
//! binding and reclaiming, the provisioner, the mover Jobs (scripted outcomes) and the
//! owner's scaling. Every test drives `next` the way the controller will: write the
//! status, then take the actions. A crash is a step whose status is written and whose
//! actions are (all or partly) not taken.

use std::collections::BTreeMap;

use super::*;
use crate::crd::{MigrationPhase as Phase, VolumeMigrationSpec, VolumeMigrationStatus as Status};

const T0: i64 = 1_800_000_000;
const NS: &str = "shop";
const CLAIM: &str = "data-db-0";
const SOURCE: &str = "pv-us";
const DEST: &str = "pv-eu";
const GIB: u64 = 1 << 30;

fn at(minutes: i64) -> Timestamp {
    Timestamp::from_second(T0 + minutes * 60).expect("valid")
}

fn root(c: char) -> String {
    c.to_string().repeat(64)
}

fn settings() -> MoveSettings {
    MoveSettings {
        require_approval: false,
        min_retention: SignedDuration::from_hours(1),
        default_retention: SignedDuration::from_hours(2),
        quiesce_timeout: SignedDuration::from_mins(30),
    }
}

fn claim_view(uid: &str, volume: &str, bound: bool) -> ClaimView {
    ClaimView {
        uid: uid.into(),
        volume_name: Some(volume.into()),
        bound,
        deleting: false,
        storage_class: Some("us-east-ssd".into()),
        request: "1Gi".into(),
        request_bytes: GIB,
        access_modes: vec!["ReadWriteOnce".into()],
        block: false,
        labels: BTreeMap::from([("app".to_string(), "db".to_string())]),
    }
}

/// A cluster with one StatefulSet `db` (3 replicas) whose claim is on `pv-us`, outside
/// the enclave, with reclaim policy Delete.
#[derive(Clone, Debug)]
struct World {
    claim: Option<ClaimView>,
    dest_claim: Option<ClaimView>,
    volumes: BTreeMap<String, VolumeView>,
    owner: Option<OwnerView>,
    /// Pods that stay on the claim whatever the replicas (a stuck pod).
    stuck_pods: u32,
    credentials: Option<Credentials>,
    transfers: BTreeMap<Pass, TransferView>,
    /// How each pass ends when started (default: success, equal roots).
    outcomes: BTreeMap<Pass, (JobView, JobView)>,
    /// Starts of a pass whose sender's container the node will not start.
    start_failures: BTreeMap<Pass, u32>,
    approval: Option<Approval>,
    enclave_classes: Vec<String>,
    class: Option<ClassView>,
    quota: Option<u64>,
    spec: VolumeMigrationSpec,
    uids: u32,
    /// The storage of each volume ever made, and whether it still exists.
    data: BTreeMap<String, bool>,
    /// A pod holds the original claim: deleting it only marks it (the
    /// `kubernetes.io/pvc-protection` finalizer).
    hold_claim: bool,
    /// The provisioner puts the destination outside the enclave (a leaky class).
    dest_outside: bool,
    /// Passes started, with whether the source was read-only.
    started: Vec<(Pass, bool)>,
    /// A pod mounting the claim is seen Ready (else only the owner's count says).
    users_ready: bool,
    /// The UIDs of the StatefulSets deleted (to be created again).
    sets_deleted: Vec<String>,
    /// A deleted StatefulSet is first seen with its deletion pending (the garbage
    /// collector orphaning its pods and claims).
    slow_set_delete: bool,
    /// The API server refuses the StatefulSet made again (an admission policy).
    refuse_set: Option<String>,
}

/// The world's StatefulSet as the controller would give it: replicas and templates.
fn set_manifest(owner: &OwnerView) -> String {
    let templates: Vec<serde_json::Value> = owner
        .claim_templates
        .iter()
        .map(|t| {
            serde_json::json!({
                "metadata": {"name": t.name},
                "spec": {"storageClassName": t.storage_class, "accessModes": ["ReadWriteOnce"]},
            })
        })
        .collect();
    serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": owner.name, "labels": {"app": "db"}},
        "spec": {"replicas": owner.replicas, "volumeClaimTemplates": templates},
    })
    .to_string()
}

impl World {
    fn new() -> Self {
        let source = VolumeView {
            name: SOURCE.into(),
            phase: VolumePhase::Bound,
            reclaim: Reclaim::Delete,
            claim_ref: Some(ClaimRef {
                namespace: NS.into(),
                name: CLAIM.into(),
                uid: Some("uid-0".into()),
            }),
            capacity_bytes: GIB,
            inside: false,
        };
        World {
            claim: Some(claim_view("uid-0", SOURCE, true)),
            dest_claim: None,
            volumes: BTreeMap::from([(SOURCE.to_string(), source)]),
            owner: Some(OwnerView {
                kind: "StatefulSet".into(),
                name: "db".into(),
                replicas: 3,
                ready_replicas: 3,
                autoscaler: None,
                when_scaled_delete: false,
                uid: "set-uid-0".into(),
                deleting: false,
                managed_by: None,
                claim_templates: vec![ClaimTemplateView {
                    name: "data".into(),
                    storage_class: Some("us-east-ssd".into()),
                }],
                manifest: None,
            }),
            sets_deleted: Vec::new(),
            slow_set_delete: false,
            refuse_set: None,
            stuck_pods: 0,
            credentials: None,
            transfers: BTreeMap::new(),
            outcomes: BTreeMap::new(),
            start_failures: BTreeMap::new(),
            approval: None,
            enclave_classes: vec!["eu-dublin-ssd".into(), "eu-norway-ssd".into()],
            class: Some(ClassView {
                name: "eu-dublin-ssd".into(),
                reaches_outside: None,
                access_modes: Some(vec!["ReadWriteOnce".into(), "ReadWriteOncePod".into()]),
                max_bytes: Some(100 * GIB),
            }),
            quota: None,
            spec: VolumeMigrationSpec {
                claim_name: CLAIM.into(),
                storage_class_name: None,
                retention_hours: None,
            },
            uids: 0,
            data: BTreeMap::from([(SOURCE.to_string(), true)]),
            hold_claim: false,
            dest_outside: false,
            started: Vec::new(),
            users_ready: false,
        }
    }

    fn uid(&mut self) -> String {
        self.uids += 1;
        format!("uid-{}", self.uids)
    }

    fn source_data(&self) -> bool {
        self.data.get(SOURCE).copied().unwrap_or(false)
    }

    fn observe(&self, status: &Status) -> Observed {
        let source_name = status
            .source_volume
            .clone()
            .or_else(|| self.claim.as_ref().and_then(|c| c.volume_name.clone()));
        let dest_name = status
            .destination_volume
            .clone()
            .or_else(|| self.dest_claim.as_ref().and_then(|c| c.volume_name.clone()));
        let users = match &self.claim {
            Some(c) if c.bound => {
                self.owner.as_ref().map_or(0, |o| o.replicas.max(0) as u32) + self.stuck_pods
            }
            _ => 0,
        };
        Observed {
            namespace: NS.into(),
            generation: Some(1),
            spec: self.spec.clone(),
            claim: self.claim.clone(),
            source_volume: source_name.and_then(|n| self.volumes.get(&n).cloned()),
            destination_claim: self.dest_claim.clone(),
            destination_volume: dest_name.and_then(|n| self.volumes.get(&n).cloned()),
            owner: self.owner.clone().map(|mut o| {
                o.manifest = Some(set_manifest(&o));
                o
            }),
            claim_users: users,
            claim_users_ready: if self.users_ready { users.min(1) } else { 0 },
            enclave_classes: self.enclave_classes.clone(),
            destination_class: self.class.clone(),
            quota_remaining_bytes: self.quota,
            approval: self.approval.clone(),
            credentials: self.credentials.clone(),
            transfers: self.transfers.clone(),
            replacement_check: match (&status.stateful_set_replacement, &self.owner) {
                (Some(r), Some(o))
                    if r.manifest.is_some() && r.replaced_uid == o.uid && !o.deleting =>
                {
                    Some(self.refuse_set.clone().map_or(Ok(()), Err))
                }
                _ => None,
            },
        }
    }

    /// The PV controller: a Released volume with reclaim policy Delete is deleted,
    /// storage and all.
    fn reclaim(&mut self) {
        let gone: Vec<String> = self
            .volumes
            .values()
            .filter(|v| v.phase == VolumePhase::Released && v.reclaim == Reclaim::Delete)
            .map(|v| v.name.clone())
            .collect();
        for name in gone {
            self.volumes.remove(&name);
            self.data.insert(name, false);
        }
    }

    fn release(&mut self, volume: Option<&str>, uid: &str) {
        if let Some(v) = volume.and_then(|v| self.volumes.get_mut(v))
            && v.claim_ref.as_ref().and_then(|r| r.uid.as_deref()) == Some(uid)
        {
            v.phase = VolumePhase::Released;
        }
        self.reclaim();
    }

    fn apply(&mut self, action: &Action) {
        match action {
            Action::IssueCredentials => {
                self.credentials.get_or_insert(Credentials {
                    sender_sha256: root('5'),
                    receiver_sha256: root('7'),
                });
            }
            Action::RevokeCredentials => self.credentials = None,
            Action::SetReclaimPolicy { volume, policy } => {
                if let Some(v) = self.volumes.get_mut(volume) {
                    v.reclaim = *policy;
                }
                self.reclaim();
            }
            Action::CreateDestinationClaim {
                name,
                storage_class,
                storage_bytes,
                access_modes,
            } => {
                assert_eq!(name, &destination_claim_name(CLAIM));
                assert_eq!(storage_class, "eu-dublin-ssd");
                assert!(*storage_bytes >= GIB);
                let original = self.claim.as_ref().map(|c| c.access_modes.clone());
                assert_eq!(Some(access_modes), original.as_ref());
                if self.dest_claim.is_none() {
                    let uid = self.uid();
                    self.volumes.insert(
                        DEST.into(),
                        VolumeView {
                            name: DEST.into(),
                            phase: VolumePhase::Bound,
                            reclaim: Reclaim::Delete,
                            claim_ref: Some(ClaimRef {
                                namespace: NS.into(),
                                name: name.clone(),
                                uid: Some(uid.clone()),
                            }),
                            capacity_bytes: *storage_bytes,
                            inside: !self.dest_outside,
                        },
                    );
                    self.data.insert(DEST.into(), true);
                    let mut claim = claim_view(&uid, DEST, true);
                    claim.storage_class = Some(storage_class.clone());
                    self.dest_claim = Some(claim);
                }
            }
            Action::StartTransfer {
                pass,
                source_read_only,
            } => {
                self.started.push((*pass, *source_read_only));
                let (sender, receiver) = self.outcomes.get(pass).cloned().unwrap_or_else(|| {
                    let done = |hash: Option<String>| JobView::Succeeded {
                        bytes: GIB,
                        files: 1000,
                        bytes_per_second: 50 << 20,
                        root_hash: hash,
                        first_difference: None,
                    };
                    let hash = (*pass == Pass::Verify).then(|| root('a'));
                    (done(hash.clone()), done(hash))
                });
                let sender = match self.start_failures.get_mut(pass) {
                    Some(left) if *left > 0 => {
                        *left -= 1;
                        JobView::NotStarted {
                            message: "OCI runtime create failed: unable to freeze".into(),
                        }
                    }
                    _ => sender,
                };
                let t = self.transfers.entry(*pass).or_default();
                t.sender.get_or_insert(sender);
                t.receiver.get_or_insert(receiver);
            }
            Action::DeleteTransfers => self.transfers.clear(),
            Action::RestartPass { pass } => {
                self.transfers.remove(pass);
            }
            Action::ScaleOwner { owner, replicas } => {
                let o = self.owner.as_mut().expect("the owner exists");
                assert_eq!(
                    (owner.kind.as_str(), owner.name.as_str()),
                    ("StatefulSet", "db")
                );
                o.replicas = *replicas;
                o.ready_replicas = *replicas;
            }
            Action::DeleteClaim { name, uid } => {
                if name == CLAIM && self.claim.as_ref().is_some_and(|c| &c.uid == uid) {
                    if self.hold_claim {
                        self.claim.as_mut().expect("checked").deleting = true;
                        return;
                    }
                    let c = self.claim.take().expect("checked");
                    self.release(c.volume_name.as_deref(), uid);
                } else if *name == destination_claim_name(CLAIM)
                    && self.dest_claim.as_ref().is_some_and(|c| &c.uid == uid)
                {
                    let c = self.dest_claim.take().expect("checked");
                    self.release(c.volume_name.as_deref(), uid);
                }
            }
            Action::BindVolume {
                volume,
                namespace,
                claim,
            } => {
                let v = self.volumes.get_mut(volume).expect("the volume exists");
                v.claim_ref = Some(ClaimRef {
                    namespace: namespace.clone(),
                    name: claim.clone(),
                    uid: None,
                });
                if v.phase != VolumePhase::Bound {
                    v.phase = VolumePhase::Available;
                }
            }
            Action::CreateClaim {
                name,
                volume,
                copy,
                storage_class,
            } => {
                assert_eq!(name, CLAIM);
                assert_eq!(copy.storage, "1Gi");
                assert_eq!(copy.labels.get("app").map(String::as_str), Some("db"));
                if self.claim.is_none() {
                    let uid = self.uid();
                    let mut claim = claim_view(&uid, volume, false);
                    claim.storage_class = storage_class.clone();
                    if let Some(v) = self.volumes.get_mut(volume)
                        && v.claim_ref.as_ref().is_some_and(|r| {
                            r.namespace == NS && r.name == *name && r.uid.is_none()
                        })
                    {
                        v.claim_ref = Some(ClaimRef {
                            namespace: NS.into(),
                            name: name.clone(),
                            uid: Some(uid.clone()),
                        });
                        v.phase = VolumePhase::Bound;
                        claim.bound = true;
                    }
                    self.claim = Some(claim);
                }
            }
            Action::DeleteVolume { volume } => {
                if self.volumes.remove(volume).is_some() {
                    self.data.insert(volume.clone(), false);
                }
            }
            Action::DeleteStatefulSet { name, uid } => {
                assert_eq!(name, "db");
                if let Some(o) = self.owner.as_mut()
                    && &o.uid == uid
                {
                    self.sets_deleted.push(uid.clone());
                    if self.slow_set_delete && !o.deleting {
                        o.deleting = true;
                    } else {
                        self.owner = None;
                    }
                }
            }
            Action::CreateStatefulSet { name, manifest } => {
                assert_eq!(name, "db");
                if self.owner.is_none() {
                    let set: serde_json::Value = serde_json::from_str(manifest).expect("JSON");
                    let uid = self.uid();
                    let templates = set["spec"]["volumeClaimTemplates"]
                        .as_array()
                        .expect("templates")
                        .iter()
                        .map(|t| ClaimTemplateView {
                            name: t["metadata"]["name"].as_str().expect("name").into(),
                            storage_class: t["spec"]["storageClassName"].as_str().map(Into::into),
                        })
                        .collect();
                    let replicas = set["spec"]["replicas"].as_i64().expect("replicas") as i32;
                    self.owner = Some(OwnerView {
                        kind: "StatefulSet".into(),
                        name: name.clone(),
                        replicas,
                        ready_replicas: replicas,
                        autoscaler: None,
                        when_scaled_delete: false,
                        uid,
                        deleting: false,
                        managed_by: None,
                        claim_templates: templates,
                        manifest: None,
                    });
                }
            }
        }
    }

    /// The slow garbage collector: a StatefulSet whose deletion is pending goes.
    fn collect_garbage(&mut self) {
        if self.owner.as_ref().is_some_and(|o| o.deleting) {
            self.owner = None;
        }
    }
}

/// A run: every status written, and what happened to the world.
struct Run {
    world: World,
    status: Status,
    phases: Vec<Phase>,
    actions: Vec<Action>,
    steps: usize,
}

/// Where a run crashes: at step `step`, after taking `taken` of its actions.
#[derive(Clone, Copy)]
struct Crash {
    step: usize,
    taken: usize,
}

/// Drives the move for up to 200 steps of 10 minutes; `meddle` changes the world
/// before each step (a user, another controller).
fn drive(
    mut world: World,
    settings: &MoveSettings,
    crash: Option<Crash>,
    meddle: &mut dyn FnMut(&mut World, &Status),
) -> Run {
    let mut status = Status::default();
    let mut phases = Vec::new();
    let mut all = Vec::new();
    let mut steps = 0;
    for i in 0..200 {
        steps = i + 1;
        meddle(&mut world, &status);
        let now = at(10 * i as i64);
        let observed = world.observe(&status);
        let seen = world.clone();
        world.collect_garbage();
        let step = next(&observed, &status, settings, now);
        let before = status.phase;
        status = step.status;
        check_invariants(&world, &status);
        if phases.last() != status.phase.as_ref() {
            phases.extend(status.phase);
        }
        let take = match crash {
            Some(c) if c.step == i => c.taken,
            _ => usize::MAX,
        };
        for action in step.actions.iter().take(take) {
            check_action(&seen, &world, &status, action, settings, now);
            world.apply(action);
            all.push(action.clone());
        }
        let terminal = status.phase.is_some_and(Phase::is_terminal);
        if terminal && step.actions.is_empty() && before == status.phase {
            break;
        }
    }
    Run {
        world,
        status,
        phases,
        actions: all,
        steps,
    }
}

fn run(world: World) -> Run {
    drive(world, &settings(), None, &mut |_, _| {})
}

/// What must hold after every status write, whatever happened.
fn check_invariants(world: &World, status: &Status) {
    let phase = status.phase.expect("a phase is always written");
    if !world.source_data() {
        assert!(
            matches!(phase, Phase::Erasing | Phase::Erased),
            "the source's data is gone in phase {phase:?}"
        );
    }
    if phase == Phase::Erased {
        assert!(status.times.erased.is_some());
        assert_eq!(status.source_root_hash, status.destination_root_hash);
    }
}

/// What must hold of every action when it is taken: `seen` is the world the step was
/// decided on (actions are asked for only on what was observed, never on what an
/// earlier action of the same step is expected to have done), `world` the world now.
fn check_action(
    seen: &World,
    world: &World,
    status: &Status,
    action: &Action,
    settings: &MoveSettings,
    now: Timestamp,
) {
    let phase = status.phase.expect("phase");
    match action {
        // The source's storage is only ever deleted by the erasure, verified, after
        // the window, with the claim on the new volume.
        Action::DeleteVolume { volume } if volume == SOURCE => {
            assert_eq!(phase, Phase::Erasing);
            let (Some(a), Some(b)) = (&status.source_root_hash, &status.destination_root_hash)
            else {
                panic!("erasing without root hashes");
            };
            assert_eq!(a, b);
            let done = status.times.done.as_ref().expect("done").0;
            assert!(now >= done.checked_add(settings.retention(None)).expect("time"));
            let claim = world.claim.as_ref().expect("the claim exists");
            assert!(claim.bound && claim.volume_name.as_deref() == Some(DEST));
        }
        Action::SetReclaimPolicy {
            volume,
            policy: Reclaim::Delete,
        } if volume == SOURCE => {
            // Only when its claim is bound to it again (the rollback restoring it).
            let claim = world.claim.as_ref().expect("the claim exists");
            assert_eq!(phase, Phase::RollingBack);
            assert!(claim.bound && claim.volume_name.as_deref() == Some(SOURCE));
        }
        // The original claim is released only after verification, with the source
        // retained.
        Action::DeleteClaim { name, .. } if name == CLAIM => {
            let claim = world.claim.as_ref();
            // Its pods were seen stopped.
            assert_eq!(seen.owner.as_ref().map_or(0, |o| o.replicas), 0);
            assert_eq!(seen.stuck_pods, 0);
            if claim.and_then(|c| c.volume_name.as_deref()) == Some(SOURCE) {
                assert_eq!(phase, Phase::Switching);
                assert_eq!(seen.volumes[SOURCE].reclaim, Reclaim::Retain);
                assert_eq!(world.volumes[SOURCE].reclaim, Reclaim::Retain);
                assert!(status.source_root_hash.is_some());
                assert_eq!(status.source_root_hash, status.destination_root_hash);
                assert!(status.times.claim_released.is_some());
            }
        }
        // The temporary claim is released in the switch only once its volume was seen
        // Retain (or it would be reclaimed with the verified copy).
        Action::DeleteClaim { name, .. }
            if *name == destination_claim_name(CLAIM) && phase == Phase::Switching =>
        {
            assert_eq!(seen.volumes[DEST].reclaim, Reclaim::Retain);
        }
        // The destination is never deleted while the claim is bound to it.
        Action::DeleteVolume { volume } if volume == DEST => {
            assert_eq!(phase, Phase::RollingBack);
            assert!(
                world
                    .claim
                    .as_ref()
                    .is_none_or(|c| c.volume_name.as_deref() != Some(DEST)),
                "the destination is deleted under the claim"
            );
        }
        // The owner is deleted only with the claim on the new volume (no rollback can
        // follow), and only once the status holds what creates it again.
        Action::DeleteStatefulSet { uid, .. } => {
            assert_eq!(phase, Phase::Restoring);
            let claim = seen.claim.as_ref().expect("the claim exists");
            assert!(claim.bound && claim.volume_name.as_deref() == Some(DEST));
            let record = status
                .stateful_set_replacement
                .as_ref()
                .expect("recorded before the delete");
            assert_eq!(&record.replaced_uid, uid);
            assert!(seen.refuse_set.is_none(), "deleted though refused");
            let manifest = record.manifest.as_deref().expect("the manifest is kept");
            assert!(manifest.contains("\"storageClassName\":\"eu-dublin-ssd\""));
        }
        Action::CreateStatefulSet { manifest, .. } => {
            assert_eq!(phase, Phase::Restoring);
            assert!(seen.owner.is_none());
            let record = status.stateful_set_replacement.as_ref().expect("recorded");
            assert_eq!(record.manifest.as_deref(), Some(manifest.as_str()));
        }
        Action::StartTransfer {
            pass,
            source_read_only,
        } => {
            assert_eq!(*source_read_only, *pass != Pass::First);
            if *pass != Pass::First {
                assert_eq!(world.owner.as_ref().map(|o| o.replicas), Some(0));
            }
        }
        _ => {}
    }
}

/// A move that ended well: the claim under its name on the new volume, the replicas
/// back, the source erased.
fn assert_erased(run: &Run) {
    let w = &run.world;
    assert_eq!(run.status.phase, Some(Phase::Erased), "{:#?}", run.status);
    let claim = w.claim.as_ref().expect("the claim exists");
    assert!(claim.bound);
    assert_eq!(claim.volume_name.as_deref(), Some(DEST));
    assert_eq!(w.owner.as_ref().map(|o| o.replicas), Some(3));
    assert!(!w.source_data());
    assert_eq!(w.data.get(DEST), Some(&true));
    assert_eq!(w.volumes[DEST].reclaim, Reclaim::Retain);
    assert!(w.dest_claim.is_none(), "the temporary claim is gone");
    assert!(w.transfers.is_empty() && w.credentials.is_none());
    assert_eq!(run.status.original_replicas, Some(3));
    // The StatefulSet's claim template names the enclave's class: created again, once.
    let owner = w.owner.as_ref().expect("the StatefulSet exists");
    assert_eq!(
        owner.claim_templates[0].storage_class.as_deref(),
        Some("eu-dublin-ssd")
    );
    assert_eq!(w.sets_deleted, ["set-uid-0"]);
    let record = run
        .status
        .stateful_set_replacement
        .as_ref()
        .expect("the replacement is recorded");
    assert_eq!(
        record.templates,
        [crate::crd::TemplateClassChange {
            name: "data".into(),
            previous_storage_class_name: Some("us-east-ssd".into()),
        }]
    );
    assert_eq!(record.storage_class_name, "eu-dublin-ssd");
    assert!(record.manifest.is_none() && record.recreated.is_some() && record.refused.is_none());
}

/// A move that was undone: the claim on the source with its data, the destination
/// gone, the reclaim policy and the replicas as they were.
fn assert_rolled_back(run: &Run, reason: &str) {
    let w = &run.world;
    assert_eq!(
        run.status.phase,
        Some(Phase::RolledBack),
        "{:#?}",
        run.status
    );
    let why = run.status.rollback_reason.clone().unwrap_or_default();
    assert!(why.contains(reason), "{why}");
    assert!(w.source_data());
    assert!(
        !w.volumes.contains_key(DEST),
        "the destination volume is removed"
    );
    assert!(w.dest_claim.is_none(), "the destination claim is removed");
    assert!(w.transfers.is_empty() && w.credentials.is_none());
    assert!(run.status.times.rolled_back.is_some());
}

fn assert_on_source(w: &World) {
    let claim = w.claim.as_ref().expect("the claim exists");
    assert!(claim.bound && claim.volume_name.as_deref() == Some(SOURCE));
    assert_eq!(w.volumes[SOURCE].reclaim, Reclaim::Delete);
}

// ---- The whole move ------------------------------------------------------------

#[test]
fn a_move_goes_through_every_phase_and_erases_the_source_after_the_window() {
    let mut copied = None;
    let run = drive(World::new(), &settings(), None, &mut |_, s| {
        if s.phase == Some(Phase::Quiescing) && copied.is_none() {
            copied = Some((s.progress.clone(), s.bytes_per_second));
        }
    });
    // What the first copy did, for `kubectl get`: bytes and files of the total, and
    // the pass's rate.
    assert_eq!(
        copied,
        Some((
            Some("first copy: 1.0 GiB of 1.0 GiB, 1000 files, 50.0 MiB/s".to_string()),
            Some(50 << 20)
        ))
    );
    assert_eq!(
        run.phases,
        [
            Phase::Copying,
            Phase::Quiescing,
            Phase::FinalSync,
            Phase::Verifying,
            Phase::Switching,
            Phase::Restoring,
            Phase::Done,
            Phase::Erasing,
            Phase::Erased,
        ]
    );
    assert_erased(&run);
    let s = &run.status;
    assert_eq!(s.source_root_hash.as_deref(), Some(root('a').as_str()));
    assert_eq!(s.destination_root_hash, s.source_root_hash);
    assert_eq!(
        s.sender_certificate_sha256.as_deref(),
        Some(root('5').as_str())
    );
    assert_eq!(
        s.receiver_certificate_sha256.as_deref(),
        Some(root('7').as_str())
    );
    assert_eq!(s.source_volume.as_deref(), Some(SOURCE));
    assert_eq!(s.destination_volume.as_deref(), Some(DEST));
    assert_eq!(s.source_reclaim_policy.as_deref(), Some("Delete"));
    assert_eq!(
        s.destination_storage_class.as_deref(),
        Some("eu-dublin-ssd")
    );
    let t = &s.times;
    for (name, time) in [
        ("planned", &t.planned),
        ("copy", &t.copy_started),
        ("quiesce", &t.quiesce_started),
        ("final", &t.final_sync_started),
        ("verify", &t.verify_started),
        ("switch", &t.switch_started),
        ("released", &t.claim_released),
        ("restore", &t.restore_started),
        ("done", &t.done),
        ("eraseAfter", &t.erase_after),
        ("erase", &t.erase_started),
        ("erased", &t.erased),
    ] {
        assert!(time.is_some(), "times.{name} is recorded");
    }
    // The window: erased no earlier than `done` plus the default retention.
    let done = t.done.as_ref().expect("done").0;
    let erased = t.erased.as_ref().expect("erased").0;
    assert!(erased.duration_since(done) >= SignedDuration::from_hours(2));
    assert_eq!(
        run.world.started,
        [
            (Pass::First, false),
            (Pass::Final, true),
            (Pass::Verify, true)
        ]
    );
    let verified = s
        .conditions
        .iter()
        .find(|c| c.type_ == "Verified")
        .expect("Verified condition");
    assert_eq!(
        (verified.status.as_str(), verified.reason.as_str()),
        ("True", "ManifestsEqual")
    );
    assert!(
        s.conditions
            .iter()
            .any(|c| c.type_ == "SourceErased" && c.status == "True")
    );
    assert!(
        s.message.as_deref().is_some_and(|m| m.contains(&root('a'))),
        "the record names the root hash the erased volume held: {:?}",
        s.message
    );
}

/// The switch keeps the claim's name: the recreated claim names the new volume, which
/// was pre-bound to that name without a UID, and carries the original's labels.
#[test]
fn the_switch_prebinds_the_new_volume_and_recreates_the_claim_under_its_name() {
    let run = run(World::new());
    let bind = run
        .actions
        .iter()
        .position(|a| {
            matches!(a, Action::BindVolume { volume, claim, namespace }
                if volume == DEST && claim == CLAIM && namespace == NS)
        })
        .expect("the new volume is pre-bound");
    let create = run
        .actions
        .iter()
        .position(|a| {
            matches!(a, Action::CreateClaim { name, volume, storage_class, .. }
                if name == CLAIM && volume == DEST && storage_class.as_deref() == Some("eu-dublin-ssd"))
        })
        .expect("the claim is recreated on the new volume");
    let release = run
        .actions
        .iter()
        .position(|a| matches!(a, Action::DeleteClaim { name, .. } if name == CLAIM))
        .expect("the original claim is released");
    let retain = run
        .actions
        .iter()
        .position(|a| {
            matches!(a, Action::SetReclaimPolicy { volume, policy: Reclaim::Retain } if volume == DEST)
        })
        .expect("the new volume is set to Retain");
    assert!(retain < release && release < bind && bind < create);
    // The source was set to Retain before anything was copied.
    let source_retain = run
        .actions
        .iter()
        .position(|a| {
            matches!(a, Action::SetReclaimPolicy { volume, policy: Reclaim::Retain } if volume == SOURCE)
        })
        .expect("the source is set to Retain");
    let first = run
        .actions
        .iter()
        .position(|a| matches!(a, Action::StartTransfer { .. }))
        .expect("a transfer");
    assert!(source_retain < first);
}

/// A mover container the node could not start is not a failed copy: the pass runs
/// again (both sides), in every pass, and the move ends as if nothing happened; the
/// restarts are counted in the status.
#[test]
fn a_pass_whose_mover_never_started_runs_again() {
    for pass in [Pass::First, Pass::Final, Pass::Verify] {
        let mut world = World::new();
        world.start_failures.insert(pass, 2);
        let run = drive(world, &settings(), None, &mut |_, _| {});
        assert_erased(&run);
        assert_eq!(run.status.mover_restarts, Some(2), "{pass:?}");
        let restarts = run
            .actions
            .iter()
            .filter(|a| **a == Action::RestartPass { pass })
            .count();
        assert_eq!(restarts, 2, "{pass:?}");
    }
}

/// ... but not for ever: after the third restart the move rolls back, naming the cause.
#[test]
fn a_mover_that_never_starts_rolls_the_move_back_after_three_restarts() {
    let mut world = World::new();
    world.start_failures.insert(Pass::Final, 10);
    let run = drive(world, &settings(), None, &mut |_, _| {});
    assert_rolled_back(
        &run,
        "was not started by its node: OCI runtime create failed",
    );
    assert_eq!(run.status.mover_restarts, Some(MOVER_START_RETRIES));
    assert!(
        run.status
            .rollback_reason
            .as_deref()
            .is_some_and(|r| r.contains("run again 3 times")),
        "{:?}",
        run.status.rollback_reason
    );
}

/// While both sides hash, the status says so and shows no figures: "0 B of 1.0 GiB"
/// would read as a copy that stalled.
#[test]
fn the_verification_says_what_runs_and_no_copy_figures() {
    let mut world = World::new();
    let running = JobView::Running {
        bytes: 0,
        files: 0,
        bytes_per_second: 0,
    };
    world
        .outcomes
        .insert(Pass::Verify, (running.clone(), running));
    let run = drive(world, &settings(), None, &mut |_, _| {});
    let s = &run.status;
    assert_eq!(s.phase, Some(Phase::Verifying));
    assert_eq!(
        s.progress.as_deref(),
        Some("verification: both sides hashing every file")
    );
    assert_eq!(
        (s.bytes_done, s.files_done, s.bytes_per_second),
        (None, None, None)
    );
}

#[test]
fn progress_is_reported_while_a_pass_runs() {
    let mut world = World::new();
    world.outcomes.insert(
        Pass::First,
        (
            JobView::Running {
                bytes: 512 << 20,
                files: 42,
                bytes_per_second: 50 << 20,
            },
            JobView::Running {
                bytes: 512 << 20,
                files: 42,
                bytes_per_second: 50 << 20,
            },
        ),
    );
    let run = drive(world, &settings(), None, &mut |_, _| {});
    let s = &run.status;
    assert_eq!(s.phase, Some(Phase::Copying));
    assert_eq!(s.bytes_done, Some(512 << 20));
    assert_eq!(s.files_done, Some(42));
    assert_eq!(s.bytes_per_second, Some(50 << 20));
    assert_eq!(
        s.progress.as_deref(),
        Some("first copy: 512.0 MiB of 1.0 GiB, 42 files, 50.0 MiB/s")
    );
}

// ---- The StatefulSet's claim template ---------------------------------------------

/// The claim template is immutable: the set is deleted with its pods and claims
/// orphaned, and created again from the record the status held first, with the
/// template on the enclave's class; the delete is waited out, never assumed.
#[test]
fn a_statefulsets_claim_template_ends_on_the_enclaves_class() {
    let mut world = World::new();
    world.slow_set_delete = true;
    let mut messages = Vec::new();
    let run = drive(world, &settings(), None, &mut |_, s| {
        messages.extend(s.message.clone());
    });
    assert_erased(&run);
    for expected in [
        "asking the API server whether it admits StatefulSet db with its claim templates on eu-dublin-ssd",
        "replacing StatefulSet db so that its claim templates name eu-dublin-ssd",
        "waiting for StatefulSet db to be deleted; its pods and claims are orphaned",
        "creating StatefulSet db again with its claim templates on eu-dublin-ssd",
    ] {
        assert!(
            messages.iter().any(|m| m.starts_with(expected)),
            "{expected}: {messages:#?}"
        );
    }
    // Deleted with its UID as precondition, created from the record, then scaled.
    let order: Vec<&str> = run
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::DeleteStatefulSet { .. } => Some("delete"),
            Action::CreateStatefulSet { .. } => Some("create"),
            Action::ScaleOwner { replicas: 3, .. } => Some("scale"),
            _ => None,
        })
        .collect();
    assert_eq!(order, ["delete", "create", "scale"]);
}

/// A run, and the message the move showed when it entered Done.
fn run_noting_done(world: World) -> (Run, String) {
    let mut done_message = None;
    let run = drive(world, &settings(), None, &mut |_, s| {
        if s.phase == Some(Phase::Done) && done_message.is_none() {
            done_message = s.message.clone();
        }
    });
    (run, done_message.expect("a Done message"))
}

/// Nothing is made again when every template already names an enclave class; when
/// several name classes outside, all of them are changed in one replacement (the
/// storage guard would refuse a set that still names one).
#[test]
fn a_statefulset_is_made_again_only_when_a_template_names_a_class_outside() {
    let mut world = World::new();
    world.owner.as_mut().expect("owner").claim_templates[0].storage_class =
        Some("eu-norway-ssd".into());
    let inside = run(world);
    assert_eq!(inside.status.phase, Some(Phase::Erased));
    assert!(inside.world.sets_deleted.is_empty());
    assert!(inside.status.stateful_set_replacement.is_none());

    let mut world = World::new();
    let templates = &mut world.owner.as_mut().expect("owner").claim_templates;
    templates.push(ClaimTemplateView {
        name: "logs".into(),
        storage_class: None,
    });
    templates.push(ClaimTemplateView {
        name: "cache".into(),
        storage_class: Some("eu-norway-ssd".into()),
    });
    let run = run(world);
    assert_eq!(run.status.phase, Some(Phase::Erased));
    let classes: Vec<(&str, Option<&str>)> = run
        .world
        .owner
        .as_ref()
        .expect("owner")
        .claim_templates
        .iter()
        .map(|t| (t.name.as_str(), t.storage_class.as_deref()))
        .collect();
    assert_eq!(
        classes,
        [
            ("data", Some("eu-dublin-ssd")),
            ("logs", Some("eu-dublin-ssd")),
            ("cache", Some("eu-norway-ssd"))
        ]
    );
    assert_eq!(run.world.sets_deleted.len(), 1);
    let record = run.status.stateful_set_replacement.expect("recorded");
    let changed: Vec<(&str, Option<&str>)> = record
        .templates
        .iter()
        .map(|t| (t.name.as_str(), t.previous_storage_class_name.as_deref()))
        .collect();
    assert_eq!(changed, [("data", Some("us-east-ssd")), ("logs", None)]);
}

/// A set the API server would not admit made again (a policy of the cluster's) is
/// never deleted: asked with a dry run first, refused, it is left as it was, the
/// application restored, and the status says why.
#[test]
fn a_set_the_api_server_would_refuse_is_left_as_it_was_and_the_status_says_why() {
    let mut world = World::new();
    world.refuse_set = Some("admission webhook \"team-rules\" denied the request".into());
    let (run, message) = run_noting_done(world);
    assert_eq!(run.status.phase, Some(Phase::Erased));
    assert!(run.world.sets_deleted.is_empty());
    let owner = run.world.owner.as_ref().expect("the set is kept");
    assert_eq!((owner.uid.as_str(), owner.replicas), ("set-uid-0", 3));
    let record = run.status.stateful_set_replacement.expect("recorded");
    assert!(record.manifest.is_none());
    assert!(record.refused.is_some_and(|r| r.contains("team-rules")));
    assert!(
        message.contains("StatefulSet db's claim template data still names us-east-ssd: the API server would not admit it made again"),
        "{message}"
    );
}

/// A StatefulSet another controller manages (a database operator, say) is not
/// recreated: that controller would make it again from its own resource. The move ends
/// and says where the template must be changed.
#[test]
fn a_managed_statefulset_is_left_to_its_controller_and_the_status_says_so() {
    let mut world = World::new();
    world.owner.as_mut().expect("owner").managed_by = Some("PostgresCluster/db".into());
    let (run, message) = run_noting_done(world);
    assert_eq!(run.status.phase, Some(Phase::Erased));
    assert!(run.world.sets_deleted.is_empty());
    assert!(
        message.contains(
            "StatefulSet db's claim template data still names us-east-ssd: it is managed by PostgresCluster/db: change the template there"
        ),
        "{message}"
    );
}

/// Someone (a GitOps tool) creating the set again with the old class before the move
/// does: that set is replaced in turn; the record always names the UID it deletes.
#[test]
fn a_set_made_again_outside_the_move_with_the_old_class_is_replaced_in_turn() {
    let mut meddled = false;
    let run = drive(World::new(), &settings(), None, &mut |w, s| {
        let pending = s
            .stateful_set_replacement
            .as_ref()
            .is_some_and(|r| r.manifest.is_some());
        if pending && w.owner.is_none() && !meddled {
            let mut old = World::new().owner.expect("owner");
            old.uid = "set-uid-gitops".into();
            old.replicas = 0;
            w.owner = Some(old);
            meddled = true;
        }
    });
    assert!(meddled);
    assert_eq!(run.status.phase, Some(Phase::Erased));
    assert_eq!(run.world.sets_deleted, ["set-uid-0", "set-uid-gitops"]);
    let owner = run.world.owner.as_ref().expect("owner");
    assert_eq!(
        owner.claim_templates[0].storage_class.as_deref(),
        Some("eu-dublin-ssd")
    );
    assert_eq!(owner.replicas, 3);
}

#[test]
fn claim_templates_are_matched_by_the_statefulset_naming_rule() {
    let templates = ["data", "data-db", "logs"];
    assert_eq!(claim_template("db", templates, "data-db-0"), Some("data"));
    assert_eq!(
        claim_template("db", templates, "data-db-db-12"),
        Some("data-db")
    );
    assert_eq!(claim_template("db", templates, "logs-db-3"), Some("logs"));
    assert_eq!(claim_template("db", templates, "data-db-"), None);
    assert_eq!(claim_template("db", templates, "data-db-0x"), None);
    assert_eq!(claim_template("web", templates, "data-db-0"), None);
}

#[test]
fn only_the_named_templates_class_changes_in_the_manifest() {
    let manifest = serde_json::json!({
        "metadata": {"name": "db", "labels": {"app": "db"}},
        "spec": {
            "replicas": 0,
            "serviceName": "db",
            "volumeClaimTemplates": [
                {"metadata": {"name": "data"}, "spec": {"storageClassName": "us-east-ssd", "accessModes": ["ReadWriteOnce"]}},
                {"metadata": {"name": "logs"}},
            ],
        },
    })
    .to_string();
    let changed: serde_json::Value = serde_json::from_str(
        &with_template_class(&manifest, &["logs".into()], "eu-dublin-ssd").expect("changed"),
    )
    .expect("JSON");
    let templates = &changed["spec"]["volumeClaimTemplates"];
    assert_eq!(templates[0]["spec"]["storageClassName"], "us-east-ssd");
    assert_eq!(templates[1]["spec"]["storageClassName"], "eu-dublin-ssd");
    assert_eq!(changed["spec"]["serviceName"], "db");
    assert_eq!(changed["metadata"]["labels"]["app"], "db");
    let missing = with_template_class(&manifest, &["cache".into()], "eu-dublin-ssd").unwrap_err();
    assert_eq!(missing, "the StatefulSet has no claim template named cache");
    assert!(with_template_class("{", &["data".into()], "x").is_err());
}

// ---- Approval ------------------------------------------------------------------

#[test]
fn with_approval_required_nothing_changes_until_an_approval_is_counted() {
    let mut s = settings();
    s.require_approval = true;
    let world = World::new();
    let observed = world.observe(&Status::default());
    let step = next(&observed, &Status::default(), &s, at(0));
    assert_eq!(step.status.phase, Some(Phase::AwaitingApproval));
    assert!(step.actions.is_empty(), "nothing is done before approval");
    // Still waiting, an hour later.
    let again = next(&observed, &step.status, &s, at(60));
    assert_eq!(again.status.phase, Some(Phase::AwaitingApproval));
    assert!(again.actions.is_empty());
    // Approved: the approver and the time are recorded and the copy starts.
    let mut approved = world.clone();
    approved.approval = Some(Approval {
        by: "carol".into(),
        at: at(61),
        approved: true,
    });
    let go = next(&approved.observe(&again.status), &again.status, &s, at(62));
    assert_eq!(go.status.phase, Some(Phase::Copying));
    assert_eq!(go.status.approved_by.as_deref(), Some("carol"));
    assert_eq!(go.status.times.approved.as_ref().map(|t| t.0), Some(at(61)));
    assert!(go.actions.contains(&Action::IssueCredentials));
    // Refused: the move ends, having changed nothing.
    let mut denied = world;
    denied.approval = Some(Approval {
        by: "dave".into(),
        at: at(61),
        approved: false,
    });
    let no = next(&denied.observe(&again.status), &again.status, &s, at(62));
    assert_eq!(no.status.phase, Some(Phase::Failed));
    assert!(no.actions.is_empty());
    assert!(
        no.status
            .message
            .as_deref()
            .is_some_and(|m| m.contains("dave"))
    );
}

// ---- Preflight ------------------------------------------------------------------

#[test]
fn preflight_refuses_with_the_field_and_changes_nothing() {
    type Change = fn(&mut World);
    let cases: Vec<(&str, Change, &str)> = vec![
        (
            "claim missing",
            |w| w.claim = None,
            "spec.claimName: PersistentVolumeClaim shop/data-db-0 does not exist",
        ),
        (
            "claim unbound",
            |w| w.claim.as_mut().unwrap().bound = false,
            "is not Bound",
        ),
        (
            "claim deleting",
            |w| w.claim.as_mut().unwrap().deleting = true,
            "is being deleted",
        ),
        (
            "block",
            |w| w.claim.as_mut().unwrap().block = true,
            "spec.volumeMode: Block",
        ),
        (
            "rwx",
            |w| w.claim.as_mut().unwrap().access_modes = vec!["ReadWriteMany".into()],
            "ReadWriteMany in spec.accessModes; a volume written from several nodes cannot be frozen",
        ),
        (
            "source missing",
            |w| {
                w.volumes.clear();
            },
            "PersistentVolume pv-us (spec.volumeName of claim data-db-0) does not exist",
        ),
        (
            "already inside",
            |w| w.volumes.get_mut(SOURCE).unwrap().inside = true,
            "already inside the enclave",
        ),
        ("owner not found", |w| w.owner = None, "owner not found"),
        (
            "daemonset",
            |w| w.owner.as_mut().unwrap().kind = "DaemonSet".into(),
            "mounted by DaemonSet db",
        ),
        (
            "hpa",
            |w| w.owner.as_mut().unwrap().autoscaler = Some("db-hpa".into()),
            "HorizontalPodAutoscaler db-hpa",
        ),
        (
            "whenScaled",
            |w| w.owner.as_mut().unwrap().when_scaled_delete = true,
            "whenScaled: Delete",
        ),
        (
            "class not the enclave's",
            |w| w.spec.storage_class_name = Some("us-east-ssd".into()),
            "spec.storageClassName: \"us-east-ssd\" is not one of the enclave's (eu-dublin-ssd, eu-norway-ssd)",
        ),
        (
            "no classes",
            |w| w.enclave_classes.clear(),
            "spec.storageClassName is absent",
        ),
        (
            "class missing",
            |w| w.class = None,
            "StorageClass eu-dublin-ssd does not exist",
        ),
        (
            "class leaks",
            |w| {
                w.class.as_mut().unwrap().reaches_outside =
                    Some("StorageClass eu-dublin-ssd has no allowedTopologies".into())
            },
            "spec.storageClassName: StorageClass eu-dublin-ssd has no allowedTopologies",
        ),
        (
            "access mode",
            |w| w.claim.as_mut().unwrap().access_modes = vec!["ReadOnlyMany".into()],
            "ReadOnlyMany in spec.accessModes, which StorageClass eu-dublin-ssd does not support",
        ),
        (
            "too big",
            |w| w.volumes.get_mut(SOURCE).unwrap().capacity_bytes = 200 * GIB,
            "provisions at most 100.0 GiB",
        ),
        (
            "quota",
            |w| w.quota = Some(GIB / 2),
            "ResourceQuota leaves 512.0 MiB",
        ),
        (
            "name taken",
            |w| w.dest_claim = Some(claim_view("x", "pv-x", true)),
            "already exists",
        ),
    ];
    for (case, change, expected) in cases {
        let mut world = World::new();
        change(&mut world);
        let step = next(
            &world.observe(&Status::default()),
            &Status::default(),
            &settings(),
            at(0),
        );
        assert_eq!(step.status.phase, Some(Phase::Failed), "{case}");
        assert!(step.actions.is_empty(), "{case}: nothing is changed");
        let message = step.status.message.clone().unwrap_or_default();
        assert!(message.contains(expected), "{case}: {message}");
        // Terminal: a later call does nothing either.
        let later = next(
            &world.observe(&step.status),
            &step.status,
            &settings(),
            at(10),
        );
        assert!(later.actions.is_empty() && later.status.phase == Some(Phase::Failed));
    }
    // The destination class named in the spec is used when it is the enclave's.
    let mut world = World::new();
    world.spec.storage_class_name = Some("eu-norway-ssd".into());
    world.class.as_mut().unwrap().name = "eu-norway-ssd".into();
    let step = next(
        &world.observe(&Status::default()),
        &Status::default(),
        &settings(),
        at(0),
    );
    assert_eq!(
        step.status.destination_storage_class.as_deref(),
        Some("eu-norway-ssd")
    );
}

// ---- Failures: each ends in a clean rollback --------------------------------------

#[test]
fn a_transfer_cut_in_the_first_copy_rolls_back() {
    let mut world = World::new();
    world.outcomes.insert(
        Pass::First,
        (
            JobView::Failed {
                exit_code: Some(12),
                message: "connection reset by peer".into(),
            },
            JobView::Running {
                bytes: 1,
                files: 1,
                bytes_per_second: 1,
            },
        ),
    );
    let run = run(world);
    assert_rolled_back(
        &run,
        "exit code 12 (error in the protocol data stream (the connection was cut)): connection reset by peer",
    );
    assert_eq!(run.status.rolled_back_from, Some(Phase::Copying));
    assert_on_source(&run.world);
    // The application was never stopped.
    assert_eq!(run.world.owner.as_ref().map(|o| o.replicas), Some(3));
}

#[test]
fn a_non_zero_exit_in_the_final_sync_rolls_back_and_restores_the_replicas() {
    let mut world = World::new();
    world.outcomes.insert(
        Pass::Final,
        (
            JobView::Succeeded {
                bytes: 1,
                files: 1,
                bytes_per_second: 0,
                root_hash: None,
                first_difference: None,
            },
            JobView::Failed {
                exit_code: Some(23),
                message: String::new(),
            },
        ),
    );
    let run = run(world);
    assert_rolled_back(
        &run,
        "the final sync receiver failed: exit code 23 (partial transfer",
    );
    assert_eq!(run.status.rolled_back_from, Some(Phase::FinalSync));
    assert_on_source(&run.world);
    assert_eq!(run.world.owner.as_ref().map(|o| o.replicas), Some(3));
}

#[test]
fn a_manifest_mismatch_rolls_back_naming_both_roots_and_the_first_path() {
    let mut world = World::new();
    let done = |hash: char, diff: Option<&str>| JobView::Succeeded {
        bytes: 0,
        files: 0,
        bytes_per_second: 0,
        root_hash: Some(root(hash)),
        first_difference: diff.map(str::to_string),
    };
    world.outcomes.insert(
        Pass::Verify,
        (
            done('a', None),
            done('b', Some("db/users.ibd differs in sha256")),
        ),
    );
    let run = run(world);
    assert_rolled_back(
        &run,
        &format!("source root {}, destination root {}", root('a'), root('b')),
    );
    assert!(
        run.status
            .rollback_reason
            .as_deref()
            .is_some_and(|r| r.contains("first difference: db/users.ibd differs in sha256"))
    );
    assert_eq!(run.status.rolled_back_from, Some(Phase::Verifying));
    let verified = run
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "Verified")
        .expect("condition");
    assert_eq!(
        (verified.status.as_str(), verified.reason.as_str()),
        ("False", "ManifestsDiffer")
    );
    assert_on_source(&run.world);
    assert_eq!(run.world.owner.as_ref().map(|o| o.replicas), Some(3));
    assert!(
        !run.actions
            .iter()
            .any(|a| matches!(a, Action::DeleteClaim { name, .. } if name == CLAIM))
    );
}

/// A verification without a root hash from one side is not a pass.
#[test]
fn a_verification_without_root_hashes_rolls_back() {
    for bad in [None, Some("not-a-hash".to_string())] {
        let mut world = World::new();
        let done = |hash: Option<String>| JobView::Succeeded {
            bytes: 0,
            files: 0,
            bytes_per_second: 0,
            root_hash: hash,
            first_difference: None,
        };
        world
            .outcomes
            .insert(Pass::Verify, (done(Some(root('a'))), done(bad)));
        let run = run(world);
        assert_rolled_back(&run, "does not go on unverified");
        assert_on_source(&run.world);
    }
}

#[test]
fn the_owner_scaled_back_up_by_someone_during_the_final_sync_rolls_back() {
    let mut world = World::new();
    // The final sync stays running, so that someone can scale up meanwhile.
    world.outcomes.insert(
        Pass::Final,
        (
            JobView::Running {
                bytes: 0,
                files: 0,
                bytes_per_second: 0,
            },
            JobView::Running {
                bytes: 0,
                files: 0,
                bytes_per_second: 0,
            },
        ),
    );
    let mut meddled = false;
    let run = drive(world, &settings(), None, &mut |w, s| {
        if s.phase == Some(Phase::FinalSync) && !meddled {
            w.owner.as_mut().unwrap().replicas = 2;
            meddled = true;
        }
    });
    assert_rolled_back(
        &run,
        "StatefulSet db was scaled back to 2 replicas during the FinalSync",
    );
    assert_on_source(&run.world);
    // Their count stands: the move does not scale over someone else's decision.
    assert_eq!(run.world.owner.as_ref().map(|o| o.replicas), Some(2));
}

#[test]
fn an_owner_that_will_not_stop_rolls_back_after_the_quiesce_timeout() {
    let mut world = World::new();
    world.stuck_pods = 1;
    let run = run(world);
    assert_rolled_back(
        &run,
        "1 pods still mount claim data-db-0 after the quiesce timeout",
    );
    assert_eq!(run.status.rolled_back_from, Some(Phase::Quiescing));
    assert_on_source(&run.world);
    assert_eq!(run.world.owner.as_ref().map(|o| o.replicas), Some(3));
    assert!(!run.actions.iter().any(|a| matches!(
        a,
        Action::StartTransfer {
            pass: Pass::Final,
            ..
        }
    )));
}

/// A claim deleted by its user mid-move: the move rolls back without recreating it
/// (their decision), and the source's data is kept (Retain) rather than lost.
#[test]
fn a_claim_deleted_by_the_user_mid_move_rolls_back_and_keeps_the_source() {
    let mut world = World::new();
    world.outcomes.insert(
        Pass::First,
        (
            JobView::Running {
                bytes: 0,
                files: 0,
                bytes_per_second: 0,
            },
            JobView::Running {
                bytes: 0,
                files: 0,
                bytes_per_second: 0,
            },
        ),
    );
    let run = drive(world, &settings(), None, &mut |w, s| {
        if s.phase == Some(Phase::Copying) && !w.transfers.is_empty() && w.claim.is_some() {
            let c = w.claim.take().unwrap();
            w.release(c.volume_name.as_deref(), &c.uid);
        }
    });
    assert_rolled_back(
        &run,
        "PersistentVolumeClaim data-db-0 was deleted during the move (not by the move)",
    );
    assert!(run.world.claim.is_none(), "not recreated");
    let source = &run.world.volumes[SOURCE];
    assert_eq!(source.reclaim, Reclaim::Retain, "its data is kept");
    assert!(
        run.status
            .message
            .as_deref()
            .is_some_and(|m| m.contains("is kept (Retain): delete it by hand"))
    );
}

/// Someone scaling the application up right after the switch (the claim already on the
/// new volume): the rollback stops it, puts the claim back on the source, removes the
/// destination and restores the replicas.
#[test]
fn a_failure_after_the_claim_moved_switches_it_back_to_the_source() {
    let mut meddled = false;
    let run = drive(World::new(), &settings(), None, &mut |w, s| {
        let on_dest = w
            .claim
            .as_ref()
            .is_some_and(|c| c.volume_name.as_deref() == Some(DEST));
        if s.phase == Some(Phase::Switching) && on_dest && !meddled {
            w.owner.as_mut().unwrap().replicas = 1;
            meddled = true;
        }
    });
    assert!(meddled);
    assert_rolled_back(&run, "scaled back to 1 replicas during the Switching");
    assert_eq!(run.status.rolled_back_from, Some(Phase::Switching));
    assert_on_source(&run.world);
    assert_eq!(run.world.owner.as_ref().map(|o| o.replicas), Some(3));
}

// ---- Erasure --------------------------------------------------------------------

#[test]
fn the_source_is_kept_for_the_window_and_the_spec_cannot_shorten_it() {
    let mut world = World::new();
    world.spec.retention_hours = Some(0);
    let mut s = settings();
    s.min_retention = SignedDuration::from_hours(5);
    let run = drive(world, &s, None, &mut |_, _| {});
    assert_erased(&run);
    let t = &run.status.times;
    let done = t.done.as_ref().unwrap().0;
    assert!(t.erased.as_ref().unwrap().0.duration_since(done) >= SignedDuration::from_hours(5));
    assert_eq!(
        t.erase_after.as_ref().map(|a| a.0),
        Some(done.checked_add(SignedDuration::from_hours(5)).unwrap())
    );
    // A longer window than the policy's is honoured.
    let mut world = World::new();
    world.spec.retention_hours = Some(10);
    let run = drive(world, &s, None, &mut |_, _| {});
    let t = &run.status.times;
    let done = t.done.as_ref().unwrap().0;
    assert!(t.erased.as_ref().unwrap().0.duration_since(done) >= SignedDuration::from_hours(10));
}

/// Run to `Done`, then change the world, and see the erasure held.
fn done_then(change: fn(&mut World, &mut Status)) -> (World, Status) {
    let mut world = World::new();
    let mut status = Status::default();
    for i in 0..30 {
        let step = next(&world.observe(&status), &status, &settings(), at(i));
        status = step.status;
        for a in &step.actions {
            world.apply(a);
        }
        if status.phase == Some(Phase::Done) {
            break;
        }
    }
    assert_eq!(status.phase, Some(Phase::Done));
    change(&mut world, &mut status);
    (world, status)
}

#[test]
fn erasure_is_held_when_the_world_or_the_record_does_not_allow_it() {
    type Change = fn(&mut World, &mut Status);
    let cases: Vec<(&str, Change, &str)> = vec![
        (
            "claim rebound to the source by a person",
            |w, _| {
                let c = w.claim.as_mut().unwrap();
                c.volume_name = Some(SOURCE.into());
                let v = w.volumes.get_mut(SOURCE).unwrap();
                v.phase = VolumePhase::Bound;
                v.claim_ref = Some(ClaimRef {
                    namespace: NS.into(),
                    name: CLAIM.into(),
                    uid: Some(c.uid.clone()),
                });
            },
            "claim data-db-0 is not bound to pv-eu",
        ),
        (
            "source bound to another claim",
            |w, _| {
                let v = w.volumes.get_mut(SOURCE).unwrap();
                v.phase = VolumePhase::Bound;
                v.claim_ref = Some(ClaimRef {
                    namespace: NS.into(),
                    name: "other".into(),
                    uid: Some("uid-x".into()),
                });
            },
            "PersistentVolume pv-us is not the released volume of the original claim data-db-0",
        ),
        (
            "source's claimRef names another namespace",
            |w, _| {
                let v = w.volumes.get_mut(SOURCE).unwrap();
                v.claim_ref.as_mut().unwrap().namespace = "other".into();
            },
            "is not the released volume of the original claim",
        ),
        (
            "source's claimRef cleared (Available again)",
            |w, _| {
                let v = w.volumes.get_mut(SOURCE).unwrap();
                v.claim_ref = None;
                v.phase = VolumePhase::Available;
            },
            "is not the released volume of the original claim",
        ),
        (
            "claim deleted",
            |w, _| w.claim = None,
            "claim data-db-0 is not bound to pv-eu",
        ),
        (
            "roots differ in the record",
            |_, s| s.destination_root_hash = Some(root('c')),
            "the manifest root hashes are not equal",
        ),
        (
            "no roots in the record",
            |_, s| {
                s.source_root_hash = None;
                s.destination_root_hash = None;
            },
            "no manifest root hashes",
        ),
    ];
    for (case, change, expected) in cases {
        let (world, status) = done_then(change);
        // Long after the window.
        let step = next(&world.observe(&status), &status, &settings(), at(100 * 60));
        assert_eq!(step.status.phase, Some(Phase::Done), "{case}");
        assert!(
            !step
                .actions
                .iter()
                .any(|a| matches!(a, Action::DeleteVolume { .. })),
            "{case}"
        );
        let message = step.status.message.clone().unwrap_or_default();
        assert!(message.contains(expected), "{case}: {message}");
    }
}

/// The world changing while the erasure runs stops it and sets the source back to
/// Retain.
#[test]
fn an_erasure_under_way_stops_when_the_claim_leaves_the_new_volume() {
    let (mut world, status) = done_then(|_, _| {});
    let step = next(&world.observe(&status), &status, &settings(), at(100 * 60));
    assert_eq!(step.status.phase, Some(Phase::Erasing));
    assert_eq!(
        step.actions,
        [Action::DeleteVolume {
            volume: SOURCE.into()
        }]
    );
    // The deletion did not go through yet (say, the reclaim policy was set to Delete),
    // and a person rebinds the claim to the source meanwhile.
    world.volumes.get_mut(SOURCE).unwrap().reclaim = Reclaim::Delete;
    world.claim.as_mut().unwrap().volume_name = Some(SOURCE.into());
    let stop = next(
        &world.observe(&step.status),
        &step.status,
        &settings(),
        at(101 * 60),
    );
    assert_eq!(stop.status.phase, Some(Phase::Done));
    assert_eq!(
        stop.actions,
        [Action::SetReclaimPolicy {
            volume: SOURCE.into(),
            policy: Reclaim::Retain
        }]
    );
    assert!(
        stop.status
            .message
            .as_deref()
            .is_some_and(|m| m.contains("stopped"))
    );
}

#[test]
fn a_reclaim_the_provisioner_cannot_do_ends_in_failed_with_the_root_hash() {
    let (mut world, status) = done_then(|_, _| {});
    let step = next(&world.observe(&status), &status, &settings(), at(100 * 60));
    assert_eq!(step.status.phase, Some(Phase::Erasing));
    world.volumes.get_mut(SOURCE).unwrap().phase = VolumePhase::Failed;
    let failed = next(
        &world.observe(&step.status),
        &step.status,
        &settings(),
        at(101 * 60),
    );
    assert_eq!(failed.status.phase, Some(Phase::Failed));
    assert!(failed.actions.is_empty());
    let message = failed.status.message.unwrap_or_default();
    assert!(
        message.contains("erase it by hand") && message.contains(&root('a')),
        "{message}"
    );
}

// ---- Crashes ------------------------------------------------------------------

/// A crash at every step of a move, after taking none, some or all but one of the
/// step's actions: the status written before the actions is what the next call reads,
/// with the world as the crash left it. Every such run still ends erased, with the
/// replicas restored, and the source's data never lost before the erasure (checked at
/// every step by `check_invariants` and `check_action`).
#[test]
fn a_crash_at_any_step_resumes_the_move() {
    let clean = run(World::new());
    assert_erased(&clean);
    let mut crashes = 0;
    for step in 0..clean.steps {
        // The actions of that step in the clean run bound how many can be taken.
        for taken in 0..4 {
            let run = drive(
                World::new(),
                &settings(),
                Some(Crash { step, taken }),
                &mut |_, _| {},
            );
            assert_erased(&run);
            crashes += 1;
        }
    }
    assert!(crashes > 40, "{crashes}");
}

/// The same for a move that fails: a crash anywhere in it or in its rollback still
/// ends rolled back, on the source, with the replicas and the reclaim policy restored.
#[test]
fn a_crash_at_any_step_of_a_rollback_still_rolls_back() {
    let failing = || {
        let mut world = World::new();
        let done = |hash: char| JobView::Succeeded {
            bytes: 0,
            files: 0,
            bytes_per_second: 0,
            root_hash: Some(root(hash)),
            first_difference: None,
        };
        world.outcomes.insert(Pass::Verify, (done('a'), done('b')));
        world
    };
    let clean = run(failing());
    assert_rolled_back(&clean, "the manifests differ");
    for step in 0..clean.steps {
        for taken in 0..4 {
            let run = drive(
                failing(),
                &settings(),
                Some(Crash { step, taken }),
                &mut |_, _| {},
            );
            assert_rolled_back(&run, "the manifests differ");
            assert_on_source(&run.world);
            assert_eq!(run.world.owner.as_ref().map(|o| o.replicas), Some(3));
        }
    }
}

/// The replicas to restore are remembered before the scale to zero and never
/// overwritten: after a crash the owner is at zero, and zero must not become the
/// replicas to restore.
#[test]
fn the_original_replicas_survive_a_crash_after_the_scale_to_zero() {
    let mut world = World::new();
    let mut status = Status::default();
    loop {
        let step = next(&world.observe(&status), &status, &settings(), at(0));
        status = step.status;
        if status.phase == Some(Phase::Quiescing) {
            assert_eq!(
                status.original_replicas,
                Some(3),
                "written before the scale"
            );
            assert!(
                step.actions
                    .iter()
                    .any(|a| matches!(a, Action::ScaleOwner { replicas: 0, .. }))
            );
            for a in &step.actions {
                world.apply(a);
            }
            break;
        }
        for a in &step.actions {
            world.apply(a);
        }
    }
    // The crash: the scale happened; the next leader reads the status written before it.
    world.stuck_pods = 1;
    let step = next(&world.observe(&status), &status, &settings(), at(1));
    assert_eq!(step.status.original_replicas, Some(3));
}

/// The release of the claim is recorded before it is deleted: a crash right after the
/// deletion followed by a failure recreates the claim on the source, instead of taking
/// the missing claim for its user's deletion.
#[test]
fn a_claim_released_by_the_move_is_recreated_on_the_source_by_a_rollback() {
    let mut failed = false;
    let run = drive(World::new(), &settings(), None, &mut |w, s| {
        if s.times.claim_released.is_some() && w.claim.is_none() && !failed {
            // The moment between the release and the recreation: the new volume
            // is lost.
            w.volumes.remove(DEST);
            w.data.insert(DEST.into(), false);
            failed = true;
        }
    });
    assert!(failed);
    assert_eq!(
        run.status.phase,
        Some(Phase::RolledBack),
        "{:#?}",
        run.status
    );
    assert!(
        run.status
            .rollback_reason
            .as_deref()
            .is_some_and(|r| r.contains("the destination volume pv-eu disappeared"))
    );
    assert_on_source(&run.world);
    assert_eq!(run.world.owner.as_ref().map(|o| o.replicas), Some(3));
    assert_eq!(
        run.world
            .claim
            .as_ref()
            .unwrap()
            .labels
            .get("app")
            .map(String::as_str),
        Some("db")
    );
}

/// After the application runs on the new volume, a failure does not roll back (that
/// would lose what it wrote): the move stops in Failed with both volumes retained.
#[test]
fn a_failure_after_the_application_is_back_keeps_both_volumes() {
    let mut meddled = false;
    let run = drive(World::new(), &settings(), None, &mut |w, s| {
        // Deleted by someone else once the move created it again (a deletion the move
        // made itself is followed by the creation its record holds).
        let recreated = s
            .stateful_set_replacement
            .as_ref()
            .is_some_and(|r| r.recreated.is_some());
        if s.phase == Some(Phase::Restoring) && recreated && !meddled {
            w.owner = None;
            meddled = true;
        }
    });
    assert!(meddled);
    assert_eq!(run.status.phase, Some(Phase::Failed));
    assert!(run.world.source_data() && run.world.data[DEST]);
    assert_eq!(run.world.volumes[SOURCE].reclaim, Reclaim::Retain);
    assert_eq!(run.world.volumes[DEST].reclaim, Reclaim::Retain);
    assert!(
        run.status
            .message
            .as_deref()
            .is_some_and(|m| m.contains("the owner was deleted"))
    );
}

/// A StatefulSet whose other replicas wait on claims of their own still outside the
/// enclave (their moves come next) never has all its replicas Ready while this claim's
/// move restores it: the pod on this claim, Ready, is the application back.
#[test]
fn the_pod_on_the_claim_ready_ends_the_restore_while_other_replicas_wait() {
    let mut others_pending = |w: &mut World, s: &Status| {
        if s.phase == Some(Phase::Restoring)
            && let Some(o) = w.owner.as_mut()
        {
            o.ready_replicas = o.ready_replicas.min(1);
        }
    };
    // Seen by the owner's count alone, 1 of 3: the move waits.
    let run = drive(World::new(), &settings(), None, &mut others_pending);
    assert_eq!(run.status.phase, Some(Phase::Restoring));
    let mut world = World::new();
    world.users_ready = true;
    let run = drive(world, &settings(), None, &mut others_pending);
    assert_erased(&run);
}

#[test]
fn transfer_credentials_replaced_mid_move_roll_back() {
    let mut world = World::new();
    world.outcomes.insert(
        Pass::First,
        (
            JobView::Running {
                bytes: 0,
                files: 0,
                bytes_per_second: 0,
            },
            JobView::Running {
                bytes: 0,
                files: 0,
                bytes_per_second: 0,
            },
        ),
    );
    let mut meddled = false;
    let run = drive(world, &settings(), None, &mut |w, s| {
        if s.sender_certificate_sha256.is_some() && !meddled {
            w.credentials = Some(Credentials {
                sender_sha256: root('e'),
                receiver_sha256: root('7'),
            });
            meddled = true;
        }
    });
    assert_rolled_back(&run, "certificates changed");
}

// ---- Words ----------------------------------------------------------------------

#[test]
fn mover_failures_and_sizes_are_in_words() {
    assert_eq!(
        job_failure(Some(24), ""),
        "exit code 24 (partial transfer: some source files vanished)"
    );
    assert_eq!(
        job_failure(None, "evicted"),
        "no exit code (the pod was lost): evicted"
    );
    assert!(job_failure(Some(99), "x").contains("non-zero exit"));
    assert_eq!(human_bytes(512), "512 B");
    assert_eq!(human_bytes(3 * GIB / 2), "1.5 GiB");
    let long = "a".repeat(250);
    let name = destination_claim_name(&long);
    assert!(
        name.len() <= 253 && name.ends_with("-enclave-move"),
        "{name}"
    );
    assert_eq!(destination_claim_name("data"), "data-enclave-move");
}

// ---- The manifest ---------------------------------------------------------------

mod manifest_tests {
    use super::super::manifest::*;
    use sha2::{Digest, Sha256};

    fn file(path: &[u8], content: &[u8]) -> Entry {
        Entry {
            path: path.to_vec(),
            file_type: FileType::Regular,
            mode: 0o640,
            uid: 999,
            gid: 999,
            size: content.len() as u64,
            sha256: Some(Sha256::digest(content).into()),
            link_target: None,
            hard_link_to: None,
            xattrs_sha256: None,
            acl_sha256: None,
        }
    }

    fn dir(path: &[u8]) -> Entry {
        Entry {
            file_type: FileType::Directory,
            mode: 0o700,
            size: 0,
            sha256: None,
            ..file(path, b"")
        }
    }

    fn sample() -> Vec<Entry> {
        vec![
            dir(b"."),
            dir(b"db"),
            file(b"db/users", b"alice\n"),
            Entry {
                hard_link_to: Some(b"db/users".to_vec()),
                ..file(b"db/users.link", b"alice\n")
            },
            Entry {
                file_type: FileType::Symlink,
                mode: 0o777,
                size: 0,
                sha256: None,
                link_target: Some(b"db/users".to_vec()),
                ..file(b"current", b"")
            },
            Entry {
                xattrs_sha256: Some([1; 32]),
                acl_sha256: Some([2; 32]),
                ..file(b"odd name\n%\xff", b"x")
            },
            Entry {
                file_type: FileType::CharDevice(1, 3),
                mode: 0o666,
                uid: 0,
                gid: 0,
                size: 0,
                sha256: None,
                ..file(b"null", b"")
            },
        ]
    }

    /// The encoding is fixed: a mover written in another language must produce these
    /// exact lines, so they are spelled out here.
    #[test]
    fn the_canonical_encoding_is_fixed_and_sorted() {
        let manifest = Manifest::new(sample()).expect("valid");
        let alice = hex::encode(Sha256::digest(b"alice\n"));
        let x = hex::encode(Sha256::digest(b"x"));
        let ones = "01".repeat(32);
        let twos = "02".repeat(32);
        let expected = format!(
            ". d 0700 999 999 0 - - - - -\n\
             current l 0777 999 999 0 - db/users - - -\n\
             db d 0700 999 999 0 - - - - -\n\
             db/users f 0640 999 999 6 {alice} - - - -\n\
             db/users.link f 0640 999 999 6 {alice} - db/users - -\n\
             null c:1:3 0666 0 0 0 - - - - -\n\
             odd%20name%0A%25%FF f 0640 999 999 1 {x} - - {ones} {twos}\n"
        );
        assert_eq!(manifest.encode(), expected);
        assert_eq!(
            manifest.root_hash(),
            hex::encode(Sha256::digest(expected.as_bytes()))
        );
        // The empty manifest's root is the SHA-256 of nothing.
        assert_eq!(
            Manifest::new(vec![]).expect("empty").root_hash(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn the_root_hash_does_not_depend_on_the_order_of_the_walk() {
        let mut reversed = sample();
        reversed.reverse();
        assert_eq!(
            Manifest::new(sample()).expect("valid").root_hash(),
            Manifest::new(reversed).expect("valid").root_hash()
        );
    }

    #[test]
    fn a_manifest_round_trips_through_its_encoding() {
        let manifest = Manifest::new(sample()).expect("valid");
        let parsed = Manifest::parse(&manifest.encode()).expect("parses");
        assert_eq!(parsed, manifest);
        assert_eq!(Manifest::parse("").expect("empty"), Manifest::default());
    }

    /// Every field is in the root hash, and the diff names the first one that differs.
    #[test]
    fn every_field_changes_the_root_and_the_diff_names_it() {
        let base = Manifest::new(sample()).expect("valid");
        type Change = fn(&mut Entry);
        let changes: Vec<(&str, Change)> = vec![
            ("mode", |e| e.mode = 0o644),
            ("uid", |e| e.uid = 1000),
            ("gid", |e| e.gid = 0),
            ("size", |e| e.size = 7),
            ("sha256", |e| e.sha256 = Some([9; 32])),
            ("hardLinkTo", |e| e.hard_link_to = None),
            ("xattrs", |e| e.xattrs_sha256 = Some([3; 32])),
            ("acl", |e| e.acl_sha256 = Some([4; 32])),
        ];
        for (field, change) in changes {
            let mut entries = sample();
            let link = entries
                .iter_mut()
                .find(|e| e.path == b"db/users.link")
                .expect("present");
            change(link);
            let other = Manifest::new(entries).expect("valid");
            assert_ne!(base.root_hash(), other.root_hash(), "{field}");
            let diff = base.first_difference(&other).expect("differs");
            assert_eq!(diff.path, "db/users.link");
            match diff.what {
                DifferenceKind::Field { field: f, .. } => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
        let mut entries = sample();
        entries[4].link_target = Some(b"elsewhere".to_vec());
        let other = Manifest::new(entries).expect("valid");
        let diff = base.first_difference(&other).expect("differs");
        assert_eq!(
            diff.to_string(),
            "current differs in linkTarget: db/users in the source, elsewhere in the destination"
        );
        assert_eq!(base.first_difference(&base.clone()), None);
    }

    #[test]
    fn the_diff_names_paths_missing_on_either_side() {
        let base = Manifest::new(sample()).expect("valid");
        let fewer = Manifest::new(
            sample()
                .into_iter()
                .filter(|e| e.path != b"db/users.link")
                .collect(),
        )
        .expect("valid");
        let diff = base.first_difference(&fewer).expect("differs");
        assert_eq!(diff.what, DifferenceKind::OnlyInSource);
        assert_eq!(
            diff.to_string(),
            "db/users.link is in the source and missing from the destination"
        );
        let diff = fewer.first_difference(&base).expect("differs");
        assert_eq!(diff.what, DifferenceKind::OnlyInDestination);
    }

    /// A file name holding spaces or a newline cannot pass for other fields or lines.
    #[test]
    fn a_hostile_file_name_cannot_forge_entries() {
        let forged = b"a f 0644 0 0 1 - - - - -\nb".to_vec();
        let manifest = Manifest::new(vec![file(&forged, b"")]).expect("valid");
        let encoded = manifest.encode();
        assert_eq!(encoded.lines().count(), 1);
        assert_eq!(encoded.trim_end().split(' ').count(), 11);
        assert_eq!(Manifest::parse(&encoded).expect("parses"), manifest);
    }

    #[test]
    fn bad_manifests_are_refused_naming_the_line_and_field() {
        let good = Manifest::new(sample()).expect("valid").encode();
        let cases: Vec<(String, &str)> = vec![
            (good.replace("0700", "0800"), "line 1: mode"),
            (good.replace(". d", ". q"), "line 1: type"),
            (good.trim_end().to_string(), "does not end in a newline"),
            (good.replacen("999 999 0", "999 0999 0", 1), "line 1: gid"),
            (good.replace("%0A", "%0a"), "line 7: path"),
            (good.replace("%20", "%41"), "line 7: path"),
            (good.replace("current l", "current  l"), "line 2: 12 fields"),
            (
                good.replace(
                    &hex::encode(Sha256::digest(b"x")),
                    &hex::encode(Sha256::digest(b"x")).to_uppercase(),
                ),
                "line 7: sha256",
            ),
            (
                "b d 0700 0 0 0 - - - - -\na d 0700 0 0 0 - - - - -\n".into(),
                "not sorted",
            ),
            (
                "a d 0700 0 0 0 - - - - -\na d 0700 0 0 0 - - - - -\n".into(),
                "appears twice",
            ),
            ("/etc d 0700 0 0 0 - - - - -\n".into(), "absolute"),
            ("a/../b d 0700 0 0 0 - - - - -\n".into(), ".. component"),
            (
                "a d 0700 0 0 0 ".to_string() + &"0".repeat(64) + " - - - -\n",
                "content SHA-256",
            ),
            (
                "a d 0700 0 0 0 - - b - -\nb d 0700 0 0 0 - - - - -\n".into(),
                "directories cannot be hard links",
            ),
            (
                format!("a f 0700 0 0 0 {} - b - -\n", "0".repeat(64)),
                "hardLinkTo must name an earlier path",
            ),
            (
                "a l 0777 0 0 0 - - - - -\n".into(),
                "link target is required",
            ),
        ];
        for (text, expected) in cases {
            let error = Manifest::parse(&text).expect_err(expected).to_string();
            assert!(error.contains(expected), "{expected}: {error}");
        }
    }
}

/// A destination the provisioner put outside the enclave is never switched to.
#[test]
fn a_destination_provisioned_outside_the_enclave_rolls_back() {
    let mut world = World::new();
    world.dest_outside = true;
    let run = run(world);
    assert_rolled_back(
        &run,
        "the destination volume pv-eu was provisioned outside the enclave",
    );
    assert_eq!(run.status.rolled_back_from, Some(Phase::Copying));
    assert_on_source(&run.world);
    assert!(
        !run.actions
            .iter()
            .any(|a| matches!(a, Action::StartTransfer { .. }))
    );
}

/// A rollback that starts while the move's own deletion of the original claim is still
/// held by its finalizer waits for the claim to go, then recreates it on the source,
/// instead of calling the rollback done over a claim about to vanish.
#[test]
fn a_rollback_waits_for_the_claim_the_switch_is_deleting_and_recreates_it() {
    let mut world = World::new();
    world.hold_claim = true;
    let mut scaled = false;
    let mut waited = 0;
    let run = drive(world, &settings(), None, &mut |w, s| {
        let deleting = w.claim.as_ref().is_some_and(|c| c.deleting);
        if s.times.claim_released.is_some() && deleting && !scaled {
            // Someone scales the application up while the claim is held.
            w.owner.as_mut().unwrap().replicas = 1;
            scaled = true;
        } else if s.phase == Some(Phase::RollingBack) && deleting {
            waited += 1;
            if waited == 3 {
                // The finalizer lets go.
                w.hold_claim = false;
                let c = w.claim.take().unwrap();
                w.release(c.volume_name.as_deref(), &c.uid);
            }
        }
    });
    assert!(scaled && waited >= 3);
    assert_rolled_back(&run, "scaled back to 1 replicas during the Switching");
    let claim = run.world.claim.as_ref().expect("recreated");
    assert!(!claim.deleting && claim.bound && claim.volume_name.as_deref() == Some(SOURCE));
    assert_eq!(run.world.volumes[SOURCE].reclaim, Reclaim::Delete);
}

// ---- Random faults --------------------------------------------------------------

/// Something that happens to a move from outside, at a step.
#[derive(Clone, Debug)]
enum Fault {
    /// The operator crashes after taking this many of the step's actions.
    Crash(usize),
    /// Someone scales the owner to this many replicas.
    Scale(i32),
    /// The claim's user deletes it (whatever volume it is on).
    DeleteClaim,
    /// A pod that will not stop starts mounting the claim.
    StuckPod,
    /// A pass's sender will fail with this exit code when started.
    FailPass(Pass, i32),
    /// The destination's manifest will differ.
    Mismatch,
    /// Someone replaces the transfer credentials.
    ReplaceCredentials,
    /// The owner is deleted.
    DeleteOwner,
}

fn fault() -> impl proptest::strategy::Strategy<Value = Fault> {
    use proptest::prelude::*;
    let pass = prop_oneof![Just(Pass::First), Just(Pass::Final), Just(Pass::Verify)];
    prop_oneof![
        4 => (0usize..4).prop_map(Fault::Crash),
        1 => (0i32..4).prop_map(Fault::Scale),
        1 => Just(Fault::DeleteClaim),
        1 => Just(Fault::StuckPod),
        1 => (pass, prop_oneof![Just(12), Just(23), Just(137)]).prop_map(|(p, c)| Fault::FailPass(p, c)),
        1 => Just(Fault::Mismatch),
        1 => Just(Fault::ReplaceCredentials),
        1 => Just(Fault::DeleteOwner),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 256, ..Default::default() })]

    /// Whatever happens from outside and whenever the operator crashes, the source's
    /// data is never lost unless the move erased it after verifying and waiting (checked
    /// at every step and every action), a rollback leaves no destination behind, and a
    /// move that stops anywhere but Erased still has its source.
    #[test]
    fn no_fault_loses_the_source_before_a_verified_erasure(
        faults in proptest::collection::vec((0usize..60, fault()), 0..6)
    ) {
        let crashes: BTreeMap<usize, usize> = faults
            .iter()
            .filter_map(|(step, f)| match f {
                Fault::Crash(taken) => Some((*step, *taken)),
                _ => None,
            })
            .collect();
        let mut world = World::new();
        let mut status = Status::default();
        let settings = settings();
        let mut user_erased = false;
        for i in 0..200usize {
            for (_, f) in faults.iter().filter(|(step, _)| *step == i) {
                match f {
                    Fault::Crash(_) => {}
                    Fault::Scale(n) => {
                        if let Some(o) = world.owner.as_mut() {
                            o.replicas = *n;
                            o.ready_replicas = *n;
                        }
                    }
                    Fault::DeleteClaim => {
                        if let Some(c) = world.claim.take() {
                            world.release(c.volume_name.as_deref(), &c.uid);
                            // A claim deleted while its volume's policy is Delete takes
                            // the data with it: Kubernetes doing what its user asked,
                            // not the move losing it (the move keeps the source Retain
                            // while it owns it, which is what is checked).
                            user_erased |= !world.source_data();
                        }
                    }
                    Fault::StuckPod => world.stuck_pods = 1,
                    Fault::FailPass(pass, code) => {
                        world.outcomes.insert(
                            *pass,
                            (
                                JobView::Failed { exit_code: Some(*code), message: String::new() },
                                JobView::Running { bytes: 0, files: 0, bytes_per_second: 0 },
                            ),
                        );
                    }
                    Fault::Mismatch => {
                        let done = |c: char| JobView::Succeeded {
                            bytes: 0,
                            files: 0,
                            bytes_per_second: 0,
                            root_hash: Some(root(c)),
                            first_difference: None,
                        };
                        world.outcomes.insert(Pass::Verify, (done('a'), done('b')));
                    }
                    Fault::ReplaceCredentials => {
                        if world.credentials.is_some() {
                            world.credentials = Some(Credentials {
                                sender_sha256: root('e'),
                                receiver_sha256: root('f'),
                            });
                        }
                    }
                    Fault::DeleteOwner => world.owner = None,
                }
            }
            let now = at(10 * i as i64);
            let seen = world.clone();
            let step = next(&world.observe(&status), &status, &settings, now);
            status = step.status;
            if !user_erased {
                check_invariants(&world, &status);
            }
            let take = crashes.get(&i).copied().unwrap_or(usize::MAX);
            for action in step.actions.iter().take(take) {
                check_action(&seen, &world, &status, action, &settings, now);
                world.apply(action);
            }
        }
        let phase = status.phase.expect("phase");
        if user_erased {
            return Ok(());
        }
        if phase == Phase::Erased {
            proptest::prop_assert!(!world.source_data());
            proptest::prop_assert_eq!(&status.source_root_hash, &status.destination_root_hash);
        } else {
            proptest::prop_assert!(world.source_data(), "{:?}: the source is lost", phase);
        }
        if phase == Phase::RolledBack {
            proptest::prop_assert!(!world.volumes.contains_key(DEST));
            proptest::prop_assert!(world.dest_claim.is_none());
            // The claim is back on the source, unless its user deleted it.
            if let Some(c) = &world.claim {
                proptest::prop_assert_eq!(c.volume_name.as_deref(), Some(SOURCE));
            }
        }
        // No move is left half-way without a reason in its status.
        proptest::prop_assert!(status.message.is_some());
    }
}

/// A ReadWriteOncePod claim cannot be read by a sender while the application runs: the
/// live first copy is skipped and the whole copy is the final sync.
#[test]
fn a_read_write_once_pod_claim_is_copied_only_with_the_application_stopped() {
    let mut world = World::new();
    world.claim.as_mut().unwrap().access_modes = vec!["ReadWriteOncePod".into()];
    let run = run(world);
    assert_erased(&run);
    assert_eq!(
        run.world.started,
        [(Pass::Final, true), (Pass::Verify, true)]
    );
}
