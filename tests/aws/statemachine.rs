//! Static checks of `infra/statemachine/pipeline.asl.json` against the handlers' error names.

use std::collections::BTreeSet;

use deltadrop::ErrorKind;
use serde_json::Value;

pub fn definition() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../infra/statemachine/pipeline.asl.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn error_names(state: &Value, field: &str) -> Vec<String> {
    state[field]
        .as_array()
        .map(|rules| {
            rules
                .iter()
                .flat_map(|r| {
                    r["ErrorEquals"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|e| e.as_str().unwrap().to_string())
                })
                .collect()
        })
        .unwrap_or_default()
}

fn targets_of_choice(
    choice: &Value,
    reachable: &mut BTreeSet<String>,
    states: &serde_json::Map<String, Value>,
    name: &str,
) {
    let target = choice["Next"].as_str().unwrap();
    assert!(
        states.contains_key(target),
        "{name} chooses missing {target}"
    );
    reachable.insert(target.to_string());
}

#[test]
fn every_transition_exists_and_every_error_name_is_one_the_handlers_return() {
    let asl = definition();
    let states = asl["States"].as_object().unwrap();
    assert!(states.contains_key(asl["StartAt"].as_str().unwrap()));
    let mut reachable = BTreeSet::new();
    for (name, state) in states {
        let mut targets: Vec<&str> = state["Next"].as_str().into_iter().collect();
        for catch in state["Catch"].as_array().into_iter().flatten() {
            targets.push(catch["Next"].as_str().unwrap());
        }
        for target in targets {
            assert!(
                states.contains_key(target),
                "{name} goes to missing state {target}"
            );
            reachable.insert(target.to_string());
        }
        for choice in state["Choices"].as_array().into_iter().flatten() {
            targets_of_choice(choice, &mut reachable, states, name);
        }
        if let Some(default) = state["Default"].as_str() {
            assert!(
                states.contains_key(default),
                "{name} defaults to missing {default}"
            );
            reachable.insert(default.to_string());
        }
        let ends = state["End"].as_bool() == Some(true)
            || state["Type"] == "Fail"
            || state["Type"] == "Succeed";
        assert!(
            ends || state["Next"].is_string() || state["Type"] == "Choice",
            "{name} neither ends nor goes anywhere"
        );
        for error in error_names(state, "Retry")
            .into_iter()
            .chain(error_names(state, "Catch"))
        {
            let builtin = ["States.", "Lambda.", "SQS.", "ECS.", "AmazonECS."]
                .iter()
                .any(|prefix| error.starts_with(prefix));
            assert!(
                builtin || ErrorKind::from_name(&error).is_some(),
                "{name} matches unknown error {error}"
            );
        }
    }
    for name in states.keys() {
        assert!(
            name == asl["StartAt"].as_str().unwrap() || reachable.contains(name),
            "{name} is unreachable"
        );
    }
}

#[test]
fn bad_files_are_quarantined_conflicts_retried_and_the_execution_fails_with_the_error() {
    let asl = definition();
    let states = &asl["States"];
    for step in ["Stage", "Archive", "Upsert"] {
        let catches = states[step]["Catch"].as_array().unwrap();
        let catch = catches.last().unwrap();
        assert_eq!(catch["ErrorEquals"][0], "States.ALL", "{step}");
        assert_eq!(catch["Next"], "Quarantine", "{step}");
        assert_eq!(catch["ResultPath"], "$.failure", "{step}");
        // A bad file is never retried: retrying cannot fix it.
        for kind in ErrorKind::ALL.iter().filter(|k| k.is_bad_file()) {
            assert!(
                !error_names(&states[step], "Retry").contains(&kind.name().to_string()),
                "{step} retries {kind}"
            );
        }
    }
    // A replaced upload (a bucket without versions) left nothing of its own to quarantine.
    for step in ["Stage", "Archive"] {
        let first = &states[step]["Catch"][0];
        assert_eq!(
            first["ErrorEquals"],
            serde_json::json!(["UploadReplaced"]),
            "{step}"
        );
        assert_eq!(first["Next"], "NotifyFailure", "{step}");
        assert_eq!(first["ResultPath"], "$.failure", "{step}");
    }
    assert_eq!(states["Quarantine"]["Next"], "NotifyFailure");
    assert_eq!(states["NotifyFailure"]["Next"], "Failed");
    assert_eq!(states["Failed"]["ErrorPath"], "$.failure.Error");
    assert_eq!(states["Upsert"]["Next"], "NotifySuccess");
}

/// The names a state retries: its Retry's, or for the lane's callback state those its first
/// Catch sends round again (a callback state is repeated by Catch, not Retry).
fn retried_names(name: &str, state: &Value) -> Vec<String> {
    if name == "StageInContainer" {
        // A task's start costs a minute: the container retries these in place.
        return deltadrop_aws::task::RETRIED.map(String::from).to_vec();
    }
    if !name.starts_with("Upsert") {
        return error_names(state, "Retry");
    }
    state["Catch"][0]["ErrorEquals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().to_string())
        .collect()
}

/// The state machine retries exactly the transient kinds: each Task's own retried names are
/// transient, each transient kind is retried where it can occur, and storage and Delta errors
/// everywhere.
#[test]
fn exactly_the_transient_kinds_are_retried() {
    let asl = definition();
    let states = asl["States"].as_object().unwrap();
    let mut retried = BTreeSet::new();
    for (name, state) in states.iter().filter(|(_, s)| s["Type"] == "Task") {
        let names = retried_names(name, state);
        for error in names.iter().filter(|e| !e.contains('.')) {
            let kind = ErrorKind::from_name(error).unwrap();
            assert!(
                kind.is_transient(),
                "{name} retries {kind}, which is not transient"
            );
            retried.insert(kind.name());
        }
        for always in ["StorageError", "DeltaError"] {
            assert!(
                names.iter().any(|n| n == always),
                "{name} does not retry {always}"
            );
        }
    }
    let transient: BTreeSet<&str> = ErrorKind::ALL
        .iter()
        .filter(|k| k.is_transient())
        .map(|k| k.name())
        .collect();
    assert_eq!(
        retried, transient,
        "transient kinds the state machine never retries"
    );
}

#[test]
fn a_mail_failure_is_retried_and_never_fails_a_load() {
    let asl = definition();
    let states = &asl["States"];
    for notify in ["NotifySuccess", "NotifyFailure"] {
        assert!(
            error_names(&states[notify], "Retry").contains(&"MailError".to_string()),
            "{notify} does not retry MailError"
        );
    }
    // After the table was updated, a failed email ends in a Succeed state with the reason kept.
    let catch = &states["NotifySuccess"]["Catch"][0];
    assert_eq!(catch["ErrorEquals"][0], "States.ALL");
    assert_eq!(catch["ResultPath"], "$.notify_failure");
    assert_eq!(states[catch["Next"].as_str().unwrap()]["Type"], "Succeed");
    assert_eq!(
        states[states["NotifySuccess"]["Next"].as_str().unwrap()]["Type"],
        "Succeed"
    );
}

/// The Upsert state hands the file to the commit lane and waits for the merger's answer. It is
/// repeated through Catch → Choice → Wait → Pass, never by Retry (on moto a retried callback
/// state replays the old answer at once; on AWS each entry gets a new token); both timeout names
/// are caught (moto raises only States.Timeout for a missed heartbeat, AWS documents
/// States.HeartbeatTimeout); every repeat is bounded; a repeat's message has a new
/// deduplication id; the token is only in the body.
#[test]
fn the_upsert_state_waits_for_the_lane_and_repeats_by_catch() {
    let asl = definition();
    let states = &asl["States"];
    let upsert = &states["Upsert"];
    assert_eq!(upsert["Resource"], "${SendToLaneAndWait}");
    assert!(
        upsert.get("Retry").is_none(),
        "a callback state must not Retry"
    );
    let parameters = &upsert["Parameters"];
    assert_eq!(parameters["MessageGroupId.$"], "$.stage.lane");
    assert_eq!(parameters["MessageBody"]["token.$"], "$$.Task.Token");
    let dedup = parameters["MessageDeduplicationId.$"].as_str().unwrap();
    assert!(!dedup.contains("Task.Token"), "{dedup}");
    assert!(dedup.contains("$.lane.attempt") && dedup.contains("$$.Execution.Name"));
    let heartbeat = upsert["HeartbeatSeconds"].as_u64().unwrap();
    let timeout = upsert["TimeoutSeconds"].as_u64().unwrap();
    // The merger heartbeats every minute while it merges.
    assert!(heartbeat > deltadrop_aws::callback::HEARTBEAT_INTERVAL.as_secs() * 5);
    assert!(timeout > heartbeat);

    let repeat = &upsert["Catch"][0];
    let repeated = error_names(upsert, "Catch");
    for name in [
        "States.Timeout",
        "States.HeartbeatTimeout",
        "CommitConflict",
    ] {
        assert!(
            repeated.contains(&name.to_string()),
            "{name} is not repeated"
        );
    }
    assert_eq!(repeat["ResultPath"], "$.lane.error");
    let again = &states[repeat["Next"].as_str().unwrap()];
    assert_eq!(again["Type"], "Choice");
    // Out of attempts, the table is asked whether a merger committed the file all the same:
    // recorded there, it is loaded; otherwise (or when the table cannot tell) the last error
    // fails it.
    let check = &states[again["Default"].as_str().unwrap()];
    assert_eq!(check["Resource"], "${UpsertFunctionArn}");
    assert_eq!(check["Parameters"]["stage.$"], "$.stage");
    assert_eq!(check["Catch"][0]["ErrorEquals"][0], "States.ALL");
    let applied = &states[check["Next"].as_str().unwrap()];
    assert_eq!(applied["Choices"][0]["Variable"], "$.applied_check.applied");
    let recorded = &states[applied["Choices"][0]["Next"].as_str().unwrap()];
    assert_eq!(recorded["InputPath"], "$.applied_check.upsert");
    assert_eq!(recorded["ResultPath"], "$.upsert");
    assert_eq!(recorded["Next"], "NotifySuccess");
    assert_eq!(applied["Default"], check["Catch"][0]["Next"]);
    let gave_up = &states[applied["Default"].as_str().unwrap()];
    assert_eq!(gave_up["InputPath"], "$.lane.error");
    assert_eq!(gave_up["ResultPath"], "$.failure");
    assert_eq!(gave_up["Next"], "Quarantine");
    for choice in again["Choices"].as_array().unwrap() {
        let bound = choice["And"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["Variable"] == "$.lane.attempt")
            .expect("every repeat is bounded by the attempt count");
        assert!(bound["NumericLessThan"].as_u64().unwrap() <= 40);
        let wait = &states[choice["Next"].as_str().unwrap()];
        assert_eq!(wait["Type"], "Wait");
        let count = &states[wait["Next"].as_str().unwrap()];
        assert_eq!(
            count["Parameters"]["attempt.$"],
            "States.MathAdd($.lane.attempt, 1)"
        );
        assert_eq!(count["Next"], "Upsert");
    }
    // The first entry starts the count.
    let enter = &states[states["Archive"]["Next"].as_str().unwrap()];
    assert_eq!(enter["Result"]["attempt"], 1);
    assert_eq!(enter["Next"], "Upsert");
}

/// The maintenance state machine: each table in its own task inside a Map, retried on transient
/// kinds only, a table's failure caught so the others still run.
#[test]
fn maintenance_maintains_each_table_in_its_own_task() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../infra/statemachine/maintenance.asl.json"
    );
    let asl: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let each = &asl["States"]["EachTable"];
    assert_eq!(each["Type"], "Map");
    assert_eq!(each["ItemsPath"], "$.feeds");
    let maintain = &each["Iterator"]["States"]["Maintain"];
    assert_eq!(maintain["Parameters"]["feed.$"], "$.feed");
    for state in [&asl["States"]["ListTables"], maintain] {
        for error in error_names(state, "Retry") {
            let builtin = error.starts_with("Lambda.");
            assert!(
                builtin || ErrorKind::from_name(&error).is_some_and(|k| k.is_transient()),
                "retries {error}"
            );
        }
    }
    let catch = &maintain["Catch"][0];
    assert_eq!(catch["ErrorEquals"][0], "States.ALL");
    assert_eq!(
        each["Iterator"]["States"][catch["Next"].as_str().unwrap()]["Type"],
        "Pass"
    );
    // The execution's output stays the list of feeds: each iteration yields {} and the Map
    // keeps its input, so no number of tables makes it exceed 256 KB.
    assert!(each["ResultPath"].is_null() && each.get("ResultPath").is_some());
    for (name, state) in each["Iterator"]["States"].as_object().unwrap() {
        if state["End"] == true {
            assert!(
                state.get("OutputPath").is_some_and(Value::is_null),
                "{name}"
            );
        }
    }
}

/// A Map child's failure answer is the error's name only: a message can be 8 KiB, and 500 of
/// them in a Map's result would pass Step Functions' 256 KiB state limit, a failure (
/// `States.DataLimitExceeded`) no Catch can catch
/// (https://docs.aws.amazon.com/step-functions/latest/dg/concepts-error-handling.html).
#[test]
fn a_failed_chunk_answers_its_error_name_only() {
    let asl = definition();
    for map in ["CountLines", "StageChunks"] {
        let children = asl["States"][map]["ItemProcessor"]["States"]
            .as_object()
            .unwrap();
        let passes: Vec<&Value> = children.values().filter(|s| s["Type"] == "Pass").collect();
        assert_eq!(passes.len(), 1, "{map}");
        let failure = &passes[0]["Parameters"]["failure"];
        assert_eq!(
            failure,
            &serde_json::json!({"Error.$": "$.failure.Error"}),
            "{map}"
        );
        let max_chunks = deltadrop::steps::stage::MAX_CHUNKS as usize;
        let answer = serde_json::json!({"index": max_chunks, "failure": {"Error": "States.ExceedToleratedFailureThreshold"}});
        assert!(
            max_chunks * (answer.to_string().len() + 1) < 64 * 1024,
            "{map}"
        );
    }
}

/// StageInContainer starts the task with what `deltadrop_aws::task` reads, sized by the route,
/// and routes its answer as the Stage state routes the function's.
#[test]
fn the_container_state_hands_the_task_its_run_and_token_and_ends_as_the_stage_state() {
    use deltadrop_aws::task::{RUN_VARIABLE, STEP_VARIABLE, TOKEN_VARIABLE};
    let asl = definition();
    let (state, stage) = (&asl["States"]["StageInContainer"], &asl["States"]["Stage"]);
    assert_eq!(
        state["Resource"],
        "arn:aws:states:::ecs:runTask.waitForTaskToken"
    );
    let overrides = &state["Parameters"]["Overrides"];
    assert_eq!(overrides["Cpu.$"], "$.route.task.cpu");
    assert_eq!(overrides["Memory.$"], "$.route.task.memory");
    let environment = overrides["ContainerOverrides"][0]["Environment"]
        .as_array()
        .unwrap();
    let value = |name: &str| {
        let variable = environment.iter().find(|v| v["Name"] == name).unwrap();
        variable
            .get("Value.$")
            .or(variable.get("Value"))
            .unwrap()
            .clone()
    };
    assert_eq!(environment.len(), 4);
    assert_eq!(value(STEP_VARIABLE), "stage");
    assert_eq!(
        value(deltadrop::environment::TASK_MEMORY_VARIABLE),
        "$.route.task.memory"
    );
    assert_eq!(value(RUN_VARIABLE), "States.JsonToString($.run)");
    assert_eq!(value(TOKEN_VARIABLE), "$$.Task.Token");
    for field in ["ResultPath", "Catch", "Next"] {
        assert_eq!(state[field], stage[field], "{field}");
    }
    // The first heartbeat comes a minute after the task starts, which may take minutes more.
    let heartbeat = state["HeartbeatSeconds"].as_u64().unwrap();
    assert!(heartbeat >= 5 * deltadrop_aws::callback::HEARTBEAT_INTERVAL.as_secs() + 300);
    assert!(state["TimeoutSeconds"].as_u64().unwrap() > heartbeat);
    // A task that cannot reach Step Functions stops only once its state has failed the file.
    let gives_up = deltadrop_aws::task::SILENT_HEARTBEATS as u64
        * deltadrop_aws::callback::HEARTBEAT_INTERVAL.as_secs();
    assert!(gives_up >= heartbeat);
}

/// A MERGE too large for the function goes back to its table's lane, marked for the container
/// tier: the same group, token and repeats as the Upsert state, and a deduplication id of its
/// own (FIFO drops a message whose id another sent within five minutes: the Upsert state's
/// message, sent moments before, must not swallow it).
#[test]
fn a_merge_too_large_for_the_function_goes_back_to_its_lane_for_the_container_tier() {
    let asl = definition();
    let (upsert, contained) = (
        &asl["States"]["Upsert"],
        &asl["States"]["UpsertInContainer"],
    );
    let handed = upsert["Catch"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["ErrorEquals"] == serde_json::json!(["MergeInContainer"]))
        .expect("the Upsert state routes MergeInContainer");
    assert_eq!(handed["Next"], "UpsertInContainer");
    let (ours, theirs) = (&contained["Parameters"], &upsert["Parameters"]);
    assert_eq!(ours["MessageBody"]["tier"], "container");
    for field in ["QueueUrl", "MessageGroupId.$"] {
        assert_eq!(ours[field], theirs[field], "{field}");
    }
    assert_eq!(ours["MessageBody"]["token.$"], "$$.Task.Token");
    assert_ne!(
        ours["MessageDeduplicationId.$"],
        theirs["MessageDeduplicationId.$"]
    );
    assert_eq!(contained["Resource"], upsert["Resource"]);
    // Its failures are the Upsert state's (sent again through the function, which hands it
    // over again), but it cannot hand over itself.
    let without_hand_over: Vec<_> = upsert["Catch"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ErrorEquals"] != serde_json::json!(["MergeInContainer"]))
        .cloned()
        .collect();
    assert_eq!(contained["Catch"], serde_json::json!(without_hand_over));
    assert_eq!(contained["Next"], upsert["Next"]);
    assert!(contained["TimeoutSeconds"].as_u64() > upsert["TimeoutSeconds"].as_u64());
}
