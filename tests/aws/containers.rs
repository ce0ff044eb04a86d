//! The container tier on the emulator: moto's Step Functions executor sends a
//! `ecs:runTask.waitForTaskToken` state's RunTask (and then a DescribeTasks) to the proxy, which
//! runs the very binary the image holds (`deltadrop-task`) as a local process with the task
//! definition's environment and the state's overrides, and reports it as ECS would. There is no
//! Docker engine here: what is emulated is only the start of the process.

use std::collections::BTreeMap;
use std::process::{Child, Command};
use std::sync::Mutex;

use serde_json::{json, Value};

use crate::emulator::{ACCOUNT, REGION};
use crate::recorder::{self, Action, CONTAINER_TASK_KEY};

pub const CLUSTER_ARN: &str = "arn:aws:ecs:us-east-1:123456789012:cluster/deltadrop";
/// The task definition's family (template.yaml's, for the stack `deltadrop`), and its one
/// revision here.
pub const TASK_FAMILY: &str = "deltadrop-container";
pub const TASK_DEFINITION_ARN: &str =
    "arn:aws:ecs:us-east-1:123456789012:task-definition/deltadrop-container:1";
pub const SUBNETS: &str = "subnet-0a1b2c3d,subnet-4e5f6a7b";
pub const SECURITY_GROUP: &str = "sg-0123456789abcdef0";
/// The container's name in the task definition (template.yaml's ContainerTaskDefinition).
const CONTAINER: &str = "deltadrop";

/// RunTask's overrides may hold 8192 characters of JSON in all
/// (https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_RunTask.html, `overrides`).
const MAX_OVERRIDES_CHARS: usize = 8192;

/// The roles template.yaml's task definition names, as tests/iam/check_calls.py resolves them.
pub fn task_definition_roles() -> [String; 2] {
    ["ContainerTaskRole", "ContainerExecutionRole"]
        .map(|role| format!("arn:aws:iam::{ACCOUNT}:role/{role}"))
}

/// One started task.
struct Task {
    process: Child,
    overrides: Value,
}

/// The tasks the proxy started, and how to start one.
pub struct Containers {
    /// The task definition's environment, with the emulator as every service's endpoint.
    environment: Vec<(String, String)>,
    tasks: Mutex<BTreeMap<String, Task>>,
}

/// How a task ended: its RunTask overrides and its exit code.
pub struct Ended {
    pub overrides: Value,
    pub exit_code: Option<i32>,
}

impl Containers {
    pub fn new(bucket: &str, proxy_endpoint: &str) -> Containers {
        let environment = [
            // template.yaml's ContainerTaskDefinition.
            ("DELTADROP_BUCKET", bucket),
            ("DELTADROP_CONFIG_KEY", "deltadrop.toml"),
            // Read on every step, as the functions here do (the test changes it).
            ("DELTADROP_CONFIG_TTL_SECONDS", "0"),
            // What ECS gives every task: the region, and the task role's credentials.
            ("AWS_REGION", REGION),
            ("AWS_ACCESS_KEY_ID", CONTAINER_TASK_KEY),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            // The emulator instead of AWS.
            ("AWS_ENDPOINT_URL", proxy_endpoint),
            ("DELTADROP_S3_ENDPOINT", proxy_endpoint),
        ];
        Containers {
            environment: environment
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            tasks: Mutex::default(),
        }
    }

    /// The IAM actions an ECS request needs beyond what its body names: RunTask passes the task
    /// definition's roles.
    pub fn passed_roles(actions: &[Action]) -> Vec<Action> {
        if actions.iter().any(|a| a.action == "ecs:RunTask") {
            task_definition_roles()
                .iter()
                .map(|r| recorder::pass_role(r))
                .collect()
        } else {
            Vec::new()
        }
    }

    /// Answers RunTask (starting the process) or DescribeTasks: status and JSON body.
    pub fn answer(&self, operation: &str, body: &[u8]) -> (u16, Value) {
        let request: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        match operation {
            "RunTask" => match self.run_task(&request) {
                Ok(task) => (200, json!({ "tasks": [task], "failures": [] })),
                Err(message) => (
                    400,
                    json!({"__type": "InvalidParameterException", "message": message}),
                ),
            },
            "DescribeTasks" => {
                let mut tasks = self.tasks.lock().unwrap();
                let described: Vec<Value> = request["tasks"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|arn| {
                        let arn = arn.as_str()?;
                        let task = tasks.get_mut(arn)?;
                        Some(describe(arn, task))
                    })
                    .collect();
                (200, json!({ "tasks": described, "failures": [] }))
            }
            other => (
                400,
                json!({"__type": "InvalidParameterException", "message": format!("the emulator's ECS does not do {other}")}),
            ),
        }
    }

    /// Checks the request as ECS would for this task definition, then starts the binary.
    fn run_task(&self, request: &Value) -> Result<Value, String> {
        if request["taskDefinition"] != TASK_FAMILY || request["cluster"] != CLUSTER_ARN {
            return Err(format!("unknown task definition or cluster: {request}"));
        }
        if request["launchType"] != "FARGATE" {
            return Err("the task definition requires FARGATE".into());
        }
        let network = &request["networkConfiguration"]["awsvpcConfiguration"];
        let subnets: Vec<&str> = network["subnets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if subnets.join(",") != SUBNETS || network["securityGroups"] != json!([SECURITY_GROUP]) {
            return Err(format!(
                "awsvpc networking needs the subnets and security group: {network}"
            ));
        }
        let overrides = &request["overrides"];
        if overrides.to_string().len() > MAX_OVERRIDES_CHARS {
            return Err("Container Overrides length must be at most 8192".into());
        }
        let [container] = overrides["containerOverrides"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
        else {
            return Err(format!("expected one container override: {overrides}"));
        };
        if container["name"] != CONTAINER {
            return Err(format!(
                "no container {} in the task definition",
                container["name"]
            ));
        }
        let mut command = Command::new(env!("CARGO_BIN_EXE_deltadrop-task"));
        command.envs(self.environment.iter().map(|(k, v)| (k, v)));
        for variable in container["environment"].as_array().into_iter().flatten() {
            let (Some(name), Some(value)) = (variable["name"].as_str(), variable["value"].as_str())
            else {
                return Err(format!(
                    "an environment override needs a name and a value: {variable}"
                ));
            };
            command.env(name, value);
        }
        let process = command
            .spawn()
            .map_err(|e| format!("cannot start the task: {e}"))?;
        let mut tasks = self.tasks.lock().unwrap();
        let arn = format!(
            "arn:aws:ecs:{REGION}:{ACCOUNT}:task/deltadrop/{:032x}",
            tasks.len() + 1
        );
        let mut task = Task {
            process,
            overrides: overrides.clone(),
        };
        let described = describe(&arn, &mut task);
        tasks.insert(arn, task);
        Ok(described)
    }

    /// Waits for every task started so far, and says how each ended.
    pub fn ended(&self) -> Vec<Ended> {
        let mut tasks = self.tasks.lock().unwrap();
        tasks
            .values_mut()
            .map(|task| Ended {
                overrides: task.overrides.clone(),
                exit_code: task.process.wait().ok().and_then(|s| s.code()),
            })
            .collect()
    }
}

/// A task as DescribeTasks shows it.
fn describe(arn: &str, task: &mut Task) -> Value {
    let exit = task.process.try_wait().ok().flatten();
    let status = if exit.is_some() { "STOPPED" } else { "RUNNING" };
    json!({
        "taskArn": arn,
        "clusterArn": CLUSTER_ARN,
        "taskDefinitionArn": TASK_DEFINITION_ARN,
        "launchType": "FARGATE",
        "lastStatus": status,
        "desiredStatus": if exit.is_some() { "STOPPED" } else { "RUNNING" },
        "cpu": task.overrides["cpu"],
        "memory": task.overrides["memory"],
        "containers": [{
            "name": CONTAINER,
            "lastStatus": status,
            "exitCode": exit.and_then(|e| e.code()),
        }],
    })
}
