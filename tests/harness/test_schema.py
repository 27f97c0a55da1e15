"""The config schema (tasks/schema.py): every shipped config passes, every key has a rule, messages."""
import pytest
from hydra import compose, initialize_config_dir

from xconv_harness.config_files import CONFIG_DIR
from xconv_harness import rules, schema
from xconv_harness.validate import ConfigError, validate

# Every task, every data/model/optimiser/scheduler/logger choice at least once, every experiment.
COMPOSITIONS = [
    ["task=classification"], ["task=generative"], ["task=segmentation"], ["task=superres"], ["task=inpainting"],
    ["task=classification", "data=cifar10", "model=cifar_net"], ["task=classification", "data=mnist"],
    ["task=classification", "data=digits"], ["task=segmentation", "data=oxford_pet"],
    ["task=generative", "data=digits"], ["logger=none"],
    ["task=classification", "optimizer@task.optimizer=sgd"], ["optimizer@task.optimizer=adamw"],
    ["scheduler@task.scheduler=none"], ["task=classification", "scheduler@task.scheduler=cosine"],
    ["task=classification", "scheduler@task.scheduler=warmup_cosine"],
    *([f"experiment={path.stem}"] for path in sorted((CONFIG_DIR / "experiment").glob("*.yaml"))),
]


def compose_config(*overrides):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


@pytest.fixture(scope="module")
def shipped():
    return [compose_config(*overrides) for overrides in COMPOSITIONS]


def test_every_shipped_config_passes_and_every_key_has_a_rule(shipped):
    ruleless = set()
    for cfg in shipped:
        validate(cfg)
        ruleless |= {path for path, parent, _ in schema.settings(cfg)
                     if schema.rule_for(path, parent) is None and path not in schema.CHECKED_ELSEWHERE}
    assert not ruleless, f"keys without a rule (schema.RULES or the target's CONFIG_RULES): {sorted(ruleless)}"


def refusal(*overrides) -> str:
    with pytest.raises(ConfigError) as info:
        validate(compose_config(*overrides))
    return str(info.value)


def test_the_harness_messages_keep_their_format():
    assert refusal("probes=-1") == "probes=-1: must be an integer >= 0 (0 = exact backprop)"
    assert refusal("probe=foo") == "probe='foo': must be one of channel, gaussian, rademacher, orthogonal"
    assert refusal("threads=0") == "threads=0: must be null (torch's default) or an integer >= 1"
    assert refusal("task=classification", "data.train_subset=0") == "data.train_subset=0: must be null (all) or an integer >= 1"


def test_an_unknown_key_is_refused_with_the_keys_its_section_takes():
    message = refusal("task=classification", "+data.batchsize=3")
    assert message.startswith("data.batchsize=3: unknown key; data (fashion_mnist) takes ")
    assert "batch_size" in message and "source" in message  # ClassificationData's own arguments
    assert refusal("+foo=1").startswith("foo=1: unknown key; the top level takes ")
    # momentum is SGD's, not Adam's
    assert refusal("+task.optimizer.momentum=0.9").startswith("task.optimizer.momentum=0.9: unknown key; "
                                                              "task.optimizer (adam) takes ")
    # The segmentation task's eta_min means nothing to ReduceLROnPlateau (it would fail in training)
    assert refusal("scheduler@task.scheduler=plateau").startswith("task.scheduler.eta_min=1e-05: unknown key")
    validate(compose_config("optimizer@task.optimizer=sgd", "task.optimizer.momentum=0.9"))


def test_a_bad_value_is_named_where_it_was_set_not_where_it_is_used():
    # model.in_channels and task.classes point at data.channels / data.num_classes
    assert refusal("task=classification", "data.num_classes=ten").startswith("data.num_classes='ten'")
    assert refusal("task=classification", "data.channels=0").startswith("data.channels=0")


def test_a_deleted_required_key_is_named():
    assert refusal("~probes") == "probes: missing; must be an integer >= 0 (0 = exact backprop)"
    assert refusal("task=generative", "~task.dataset").startswith("task.dataset: missing")
    validate(compose_config("~trainer.max_epochs"))  # Lightning's default applies


@pytest.mark.parametrize("rule,good,bad", [
    (rules.Integer(least=1, also=(-1,)), [1, 7, -1], [0, -2, 1.0, True, "1", None]),
    (rules.Number(above=0, most=1), [0.5, 1, 1.0], [0, -0.1, 1.5, float("nan"), float("inf"), False]),
    (rules.Choice(options=("a", 32)), ["a", 32], ["b", "32", 32.0, None]),
    (rules.ListOf(item=rules.Integer(least=0), items=2), [[0, 3]], [[0], [0, -1], "0,3", None]),
    (rules.Text(null="unset"), ["x", None], ["", "  ", 3]),
])
def test_rules_accept_and_refuse(rule, good, bad):
    assert all(rule.accepts(value) for value in good)
    assert not any(rule.accepts(value) for value in bad)


def test_optimiser_and_scheduler_keys_come_from_their_targets():
    # a scheduler's arguments are its class's; the run supplies the rest (STEPPING), not the config
    assert refusal("+task.scheduler.total_steps=9", "task=generative").startswith(
        "task.scheduler.total_steps=9: unknown key; task.scheduler (warmup_cosine) takes _partial_, _target_, "
        "eta_min, name, warmup_steps")
    assert refusal("+task.scheduler.monitor=val/loss").startswith("task.scheduler.monitor='val/loss': unknown key")
    validate(compose_config("task=classification", "+task.scheduler.monitor=val/loss"))  # plateau steps on one
    assert refusal("task.optimizer._partial_=false") == ("task.optimizer._partial_=False: must be true "
                                                         "(the task completes the call)")
    assert refusal("task.optimizer._target_=torch.optim.Nope").startswith(
        "task.optimizer._target_='torch.optim.Nope': cannot be imported")


def test_a_group_option_name_cannot_disagree_with_its_target():
    """``task.optimizer.name=sgd`` used to switch optimisers; now the group choice does, and the name alone is refused."""
    assert refusal("task.optimizer.name=sgd") == ("task.optimizer.name='sgd': must be adam, the optimizer "
                                                  "task.optimizer._target_='torch.optim.Adam' comes from "
                                                  "(to use sgd: optimizer@task.optimizer=sgd)")
    assert refusal("task=superres", "task.scheduler.name=cosine").startswith("task.scheduler.name='cosine': must be none")


def test_rules_are_declared_beside_the_constructors_that_take_the_keys():
    from xconv_harness.data.segmentation import TextureMosaicData
    from xconv_harness.segmentation import SegmentationTask

    assert "data.batch_size" not in schema.RULES and "task.classes" not in schema.RULES
    assert all(key.split(".")[0] in ("trainer", "logger") or "." not in key for key in schema.RULES)
    rules = schema.section_rules("data", {"_target_": "xconv_harness.data.segmentation.TextureMosaicData"})
    assert rules["textures"] is TextureMosaicData.CONFIG_RULES["textures"]
    assert rules["batch_size"].allowed == "an integer >= 1"  # from the base class SplitDataModule
    assert set(SegmentationTask.CONFIG_RULES) <= set(schema.allowed_keys(
        "task", {"_target_": "xconv_harness.segmentation.SegmentationTask"}))


def test_the_seed_is_refused_outside_what_numpy_and_lightning_accept():
    assert refusal("seed=-1") == "seed=-1: must be an integer in [0, 4294967295]"
    assert refusal("seed=4294967296").startswith("seed=4294967296: must be an integer in [0, 4294967295]")
    validate(compose_config("seed=4294967295"))


@pytest.mark.parametrize("overrides,message", [
    (["task=segmentation", "data.image_size=7"],
     "data.image_size=7: must be a multiple of 32 (smp_unet with encoder_depth 5 halves it 5 times)"),
    (["task=segmentation", "data=oxford_pet", "data.image_size=100"],
     "data.image_size=100: must be a multiple of 32 (smp_unet with encoder_depth 5 halves it 5 times)"),
    (["task=superres", "data.size=100"],
     "data.size=100: must be a multiple of 32 and at least 64 (SkipNet with 5 scales halves it 5 times)"),
    (["task=superres", "data.size=100", "data.scale_factor=3"],
     "data.size=100: must be a multiple of 32 and at least 64 (SkipNet with 5 scales halves it 5 times), "
     "after the crop to a multiple of data.scale_factor=3 (here 99)"),
    (["task=inpainting", "data.size=32"],
     "data.size=32: must be a multiple of 32 and at least 64 (SkipNet with 5 scales halves it 5 times)"),
    (["task=inpainting", "model.channels_down=[8,8,8]", "model.channels_up=[8,8,8]", "model.channels_skip=[4,4,4]",
      "data.size=36"], "data.size=36: must be a multiple of 8 and at least 16 (SkipNet with 3 scales halves it 3 times)"),
    (["task=classification", "data.image_size=7"],
     "data.image_size=7: must be 28, the side of the images data (fashion_mnist) delivers"),
    (["task=classification", "data=cifar10", "model=cifar_net", "model.image_size=28"],
     "model.image_size=28: must be 32, the side of the images data (cifar10) delivers"),
])
def test_image_sizes_the_model_cannot_take_are_refused_naming_the_key_set(overrides, message):
    assert refusal(*overrides) == message


@pytest.mark.parametrize("overrides", [
    ["task=segmentation", "data.image_size=96"], ["task=superres", "data.size=97", "data.scale_factor=3"],
    ["task=inpainting", "data.size=64"], ["task=superres", "data.size=null"], ["task=generative", "data=digits"],
])
def test_image_sizes_the_model_takes_pass(overrides):
    validate(compose_config(*overrides))


def test_the_unet_side_rule_is_where_every_encoder_stage_halves_the_side_exactly():
    import torch

    from xconv_harness.models.segmentation import ENCODER_DEPTH, smp_unet

    model = smp_unet("resnet18", 3, 2).eval()
    assert ENCODER_DEPTH == model.encoder._depth
    rule = smp_unet.input_side_rule({})
    with torch.no_grad():
        for side in (7, 31, 32, 48, 64, 80, 96):
            sides = [feature.shape[-1] for feature in model.encoder(torch.zeros(1, 3, side, side))]
            exact = all(found * 2 ** level == side for level, found in enumerate(sides))
            assert rule.accepts(side) == exact, (side, sides)


def test_the_skip_net_side_rule_is_where_it_runs_and_every_scale_halves_exactly():
    import torch

    from xconv_harness.models.dip import SkipNet

    model = SkipNet(in_channels=2, out_channels=3, channels_down=[4] * 3, channels_up=[4] * 3, channels_skip=[1] * 3)
    rule = SkipNet.input_side_rule({"channels_down": [4] * 3})
    assert rule.allowed.startswith("a multiple of 8 and at least 16")
    for side in (8, 12, 15, 16, 20, 24, 32):
        try:
            runs = model(torch.zeros(1, 2, side, side)).shape[-1] == side
        except ValueError:  # BatchNorm needs more than one value per channel at the coarsest scale
            runs = False
        assert rule.accepts(side) == (runs and side % 8 == 0), side


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors")
@pytest.mark.parametrize("name", ["MnistNet", "CifarNet"])
def test_the_classifier_side_rules_are_where_pooling_leaves_features(name):
    from xconv_harness.models import classification

    network = getattr(classification, name)
    for side in range(1, 40):
        features = network(image_size=side).classifier[1].in_features
        assert network.input_side_rule({}).accepts(side) == (features > 0), (name, side)


def test_a_constructor_refusal_names_the_argument_it_can_be_pinned_on():
    from xconv_harness import config_nodes

    unet = {"_target_": "xconv_harness.models.segmentation.smp_unet", "name": "smp_unet", "encoder": "resnet999",
            "in_channels": 3, "classes": 6}
    with pytest.raises(ConfigError, match=r"^model\.encoder='resnet999': xconv_harness\.models\.segmentation\.smp_unet "
                                          r"refused it \(KeyError: Wrong encoder name `resnet999`"):
        config_nodes.instantiate(unet, "model")  # smp's own error, had the rule not refused it first
    conv = {"_target_": "torch.nn.Conv2d", "name": "conv", "in_channels": 1, "out_channels": 2, "kernel_size": 3,
            "stride": 1, "padding_mode": "bogus"}
    with pytest.raises(ConfigError, match=r"^model\.padding_mode='bogus': torch\.nn\.Conv2d refused it \(ValueError"):
        config_nodes.instantiate(conv, "model")


@pytest.mark.parametrize("flush", [True, False])
def test_flush_denormal_sets_torch_before_the_run(flush):
    """build() makes subnormal floats read as zero (flush_denormal=true, the default) or keeps them."""
    import torch

    from xconv_harness.config_files import compose_experiment
    from xconv_harness.run import build

    subnormal = torch.tensor([1e-40])
    supported = torch.set_flush_denormal(False)  # True where the CPU can (x86 with SSE3)
    try:
        build(compose_experiment("table1_mnist", ("data.dataset=digits", f"flush_denormal={str(flush).lower()}")))
        assert bool((subnormal * 1.0 == 0).item()) is (flush and supported)
    finally:
        torch.set_flush_denormal(False)
