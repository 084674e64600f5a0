use super::*;

const ID: &str = "ecs-svc/0000000000000000042";
const MINUTE_MS: u64 = 60_000;

fn configuration(strategy: DeploymentStrategy) -> DeploymentConfiguration {
    DeploymentConfiguration {
        strategy: Some(strategy),
        bake_time_in_minutes: Some(0),
        ..Default::default()
    }
}

fn facts(now_ms: u64, green_stable: u32, blue_live: u32) -> Facts {
    Facts {
        now_ms,
        desired: 2,
        green_stable,
        green_healthy: green_stable > 0,
        blue_live,
        minute_ms: MINUTE_MS,
    }
}

/// Runs the machine over a table of (facts, expected stage, expected share,
/// finished), one pass per row, from a fresh deployment.
fn check(configuration: &DeploymentConfiguration, rows: &[(Facts, Stage, u32, bool)]) -> Progress {
    let mut progress = Progress::new(0);
    for (number, (facts, stage, percent, finished)) in rows.iter().enumerate() {
        let stepped = step(ID, &progress, configuration, facts);
        assert_eq!(stepped.rollback, None, "row {number}");
        progress = stepped.progress;
        assert_eq!(
            (progress.stage, progress.green_percent, progress.finished),
            (*stage, *percent, *finished),
            "row {number}: {facts:?}"
        );
    }
    progress
}

#[test]
fn blue_green_waits_for_green_then_shifts_all_at_once_then_bakes_then_cleans_up() {
    let mut config = configuration(DeploymentStrategy::BlueGreen);
    config.bake_time_in_minutes = Some(2);
    check(
        &config,
        &[
            // Green launching: held at SCALE_UP.
            (facts(0, 0, 2), Stage::ScaleUp, 0, false),
            (facts(1_000, 1, 2), Stage::ScaleUp, 0, false),
            // Green whole: test traffic, then every request at once.
            (facts(2_000, 2, 2), Stage::BakeTime, 100, false),
            (facts(2_000 + MINUTE_MS, 2, 2), Stage::BakeTime, 100, false),
            // Baked: blue is let go; done once it is gone.
            (
                facts(2_000 + 2 * MINUTE_MS, 2, 2),
                Stage::CleanUp,
                100,
                false,
            ),
            (
                facts(3_000 + 2 * MINUTE_MS, 2, 0),
                Stage::CleanUp,
                100,
                true,
            ),
        ],
    );
}

#[test]
fn linear_steps_wait_their_bake_time_each() {
    let mut config = configuration(DeploymentStrategy::Linear);
    config.linear_configuration = Some(LinearConfiguration {
        step_percent: Some(25.0),
        step_bake_time_in_minutes: Some(1),
    });
    check(
        &config,
        &[
            (facts(0, 2, 2), Stage::ProductionTrafficShift, 25, false),
            (
                facts(MINUTE_MS - 1, 2, 2),
                Stage::ProductionTrafficShift,
                25,
                false,
            ),
            (
                facts(MINUTE_MS, 2, 2),
                Stage::ProductionTrafficShift,
                50,
                false,
            ),
            (
                facts(2 * MINUTE_MS, 2, 2),
                Stage::ProductionTrafficShift,
                75,
                false,
            ),
            // The last step reaches 100 and moves on: no bake after it but BAKE_TIME's.
            (facts(3 * MINUTE_MS, 2, 2), Stage::CleanUp, 100, false),
            (facts(3 * MINUTE_MS, 2, 0), Stage::CleanUp, 100, true),
        ],
    );
}

#[test]
fn canary_sends_its_share_then_the_rest_after_its_bake() {
    let mut config = configuration(DeploymentStrategy::Canary);
    config.canary_configuration = Some(CanaryConfiguration {
        canary_percent: Some(10.0),
        canary_bake_time_in_minutes: Some(5),
    });
    check(
        &config,
        &[
            (facts(0, 2, 2), Stage::ProductionTrafficShift, 10, false),
            (
                facts(4 * MINUTE_MS, 2, 2),
                Stage::ProductionTrafficShift,
                10,
                false,
            ),
            (facts(5 * MINUTE_MS, 2, 2), Stage::CleanUp, 100, false),
        ],
    );
}

#[test]
fn no_shift_lands_on_a_green_with_no_healthy_task() {
    let mut config = configuration(DeploymentStrategy::Linear);
    config.linear_configuration = Some(LinearConfiguration {
        step_percent: Some(50.0),
        step_bake_time_in_minutes: Some(0),
    });
    let sick = Facts {
        green_healthy: false,
        ..facts(MINUTE_MS, 2, 2)
    };
    let progress = check(
        &config,
        &[
            (facts(0, 2, 2), Stage::ProductionTrafficShift, 50, false),
            // Green's tasks all fell ill: the share stays where it is.
            (sick, Stage::ProductionTrafficShift, 50, false),
            (facts(2 * MINUTE_MS, 2, 2), Stage::CleanUp, 100, false),
        ],
    );
    assert!(progress.test_on_green());
}

#[test]
fn a_pause_hook_holds_its_stage_until_continued() {
    let mut config = configuration(DeploymentStrategy::BlueGreen);
    config.lifecycle_hooks = Some(vec![DeploymentLifecycleHook {
        target_type: Some(DeploymentLifecycleHookTargetType::Pause),
        lifecycle_stages: Some(vec![DeploymentLifecycleHookStage::PostTestTrafficShift]),
        timeout_configuration: Some(DeploymentLifecycleHookTimeoutConfiguration {
            timeout_in_minutes: Some(10),
            action: Some(DeploymentLifecycleHookAction::Rollback),
        }),
        ..Default::default()
    }]);
    let mut progress = check(
        &config,
        &[
            (facts(0, 2, 2), Stage::PostTestTrafficShift, 0, false),
            (
                facts(MINUTE_MS, 2, 2),
                Stage::PostTestTrafficShift,
                0,
                false,
            ),
        ],
    );
    assert!(progress.test_on_green());
    let hook = &progress.hooks[0];
    assert_eq!(hook.status, DeploymentLifecycleHookStatus::AwaitingAction);
    assert_eq!(hook.expires_at_ms, 10 * MINUTE_MS);
    assert_eq!(
        progress.hook_details()[0].hook_id,
        Some(hook.hook_id.clone())
    );
    // Continued: on to production.
    progress.hooks[0].status = DeploymentLifecycleHookStatus::Succeeded;
    let stepped = step(ID, &progress, &config, &facts(2 * MINUTE_MS, 2, 2));
    assert_eq!(
        (stepped.progress.stage, stepped.progress.green_percent),
        (Stage::CleanUp, 100)
    );
    // Not continued: the timeout's action, a rollback.
    let mut waiting = progress.clone();
    waiting.hooks[0].status = DeploymentLifecycleHookStatus::AwaitingAction;
    let timed_out = step(ID, &waiting, &config, &facts(10 * MINUTE_MS, 2, 2));
    assert!(timed_out.rollback.is_some());
    assert_eq!(timed_out.progress.green_percent, 0);
    assert_eq!(
        timed_out.progress.hooks[0].status,
        DeploymentLifecycleHookStatus::TimedOut
    );
    // Answered ROLLBACK.
    waiting.hooks[0].status = DeploymentLifecycleHookStatus::Failed;
    assert!(step(ID, &waiting, &config, &facts(MINUTE_MS, 2, 2))
        .rollback
        .is_some());
}

#[test]
fn a_hook_timing_out_with_continue_goes_on() {
    let mut config = configuration(DeploymentStrategy::BlueGreen);
    config.lifecycle_hooks = Some(vec![DeploymentLifecycleHook {
        target_type: Some(DeploymentLifecycleHookTargetType::Pause),
        lifecycle_stages: Some(vec![DeploymentLifecycleHookStage::PreScaleUp]),
        timeout_configuration: Some(DeploymentLifecycleHookTimeoutConfiguration {
            timeout_in_minutes: Some(1),
            action: Some(DeploymentLifecycleHookAction::Continue),
        }),
        ..Default::default()
    }]);
    check(
        &config,
        &[
            (facts(0, 0, 2), Stage::PreScaleUp, 0, false),
            (facts(MINUTE_MS, 0, 2), Stage::ScaleUp, 0, false),
        ],
    );
}

#[test]
fn stages_report_as_the_model_names_them() {
    assert_eq!(
        Stage::PreProductionTrafficShift.reported(),
        ServiceDeploymentLifecycleStage::PostTestTrafficShift
    );
    assert_eq!(Stage::BakeTime.reported().as_str(), "BAKE_TIME");
    assert_eq!(Stage::CleanUp.reported().as_str(), "CLEAN_UP");
    let json = serde_json::to_string(&Stage::PostProductionTrafficShift).expect("serializes");
    assert_eq!(json, "\"POST_PRODUCTION_TRAFFIC_SHIFT\"");
}

#[test]
fn configurations_out_of_range_are_refused() {
    let bad = [
        DeploymentConfiguration {
            bake_time_in_minutes: Some(1441),
            ..Default::default()
        },
        DeploymentConfiguration {
            linear_configuration: Some(LinearConfiguration {
                step_percent: Some(2.0),
                step_bake_time_in_minutes: None,
            }),
            ..Default::default()
        },
        DeploymentConfiguration {
            canary_configuration: Some(CanaryConfiguration {
                canary_percent: Some(100.5),
                canary_bake_time_in_minutes: None,
            }),
            ..Default::default()
        },
        DeploymentConfiguration {
            canary_configuration: Some(CanaryConfiguration {
                canary_percent: Some(5.0),
                canary_bake_time_in_minutes: Some(-1),
            }),
            ..Default::default()
        },
        DeploymentConfiguration {
            lifecycle_hooks: Some(vec![DeploymentLifecycleHook {
                target_type: Some(DeploymentLifecycleHookTargetType::AwsLambda),
                hook_target_arn: Some("arn:aws:lambda:us-east-1:000000000000:function:f".into()),
                lifecycle_stages: Some(vec![DeploymentLifecycleHookStage::PreScaleUp]),
                ..Default::default()
            }]),
            ..Default::default()
        },
    ];
    for configuration in bad {
        let error = check_configuration(&configuration).expect_err("refused");
        assert_eq!(error.code, "InvalidParameterException", "{configuration:?}");
    }
    let good = DeploymentConfiguration {
        bake_time_in_minutes: Some(1440),
        linear_configuration: Some(LinearConfiguration {
            step_percent: Some(3.0),
            step_bake_time_in_minutes: Some(0),
        }),
        ..Default::default()
    };
    assert!(check_configuration(&good).is_ok());
}
