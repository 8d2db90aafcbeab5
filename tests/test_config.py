"""Configs: validation messages that name the fix, the fine-tuning loop nested as a TrainConfig with
derived fields resolved once, nested updates, and the typed profiles every notebook reads."""

import math

import pytest

from workbench.config import (DEFAULT_LR, FinetuneConfig, RunConfig, TrainConfig, finetune_train, from_dict, updated,
                              with_length)
from workbench.profiles import PROFILES, get_profile


def test_resolved_fills_the_derived_fields_from_the_data():
    tc = TrainConfig(max_iters=None, epochs=2.0, batch_size=8, grad_accum=2, lr=None, min_lr=None, warmup_iters=None,
                     eval_interval=None).resolved(examples=100, default_lr=5e-3)
    assert tc.max_iters == 13  # ceil(2 * 100 / (8 * 2))
    assert tc.epochs is None and tc.lr == 5e-3 and tc.min_lr == pytest.approx(5e-4)
    assert tc.warmup_iters == 1 and tc.eval_interval == 4  # round(0.1 * 13), ceil(13 / 4)
    explicit = TrainConfig(max_iters=40, lr=1e-3, min_lr=0.0, warmup_iters=0, eval_interval=7)
    assert explicit.resolved() == explicit  # nothing to derive: unchanged


def test_finetune_config_nests_the_loop_with_each_modes_learning_rate():
    config = FinetuneConfig(mode="lora")
    assert isinstance(config.train, TrainConfig) and config.train.weight_decay == 0.01
    assert config.loop(160).lr == DEFAULT_LR["lora"] and config.loop(160).max_iters == 30  # 3 epochs of 16
    assert FinetuneConfig(mode="lora", train=finetune_train(lr=1e-4)).loop(160).lr == 1e-4
    assert updated(config, {"mode": "hf"}).loop(160).lr == DEFAULT_LR["hf"]  # unset lr follows the mode


def test_from_dict_keeps_the_nested_defaults_and_rejects_unknown_fields():
    config = from_dict(FinetuneConfig, {"mode": "frozen", "train": {"max_iters": 200, "epochs": None}})
    assert config.train.max_iters == 200 and config.train.weight_decay == 0.01 and config.train.seed == 0
    with pytest.raises(ValueError, match="unknown TrainConfig field.*max_steps.*valid:"):
        from_dict(FinetuneConfig, {"train": {"max_steps": 5}})
    run = RunConfig.from_dict({"model": {"n_layer": 3}})
    assert run.model.n_layer == 3 and run.model.n_head == RunConfig().model.n_head


@pytest.mark.parametrize("cls, d, message", [
    (RunConfig, [], "a RunConfig must be a JSON object of its fields, got []"),
    (RunConfig, None, "a RunConfig must be a JSON object of its fields, got None"),
    (RunConfig, {"model": []}, "RunConfig section 'model' must be a JSON object of ModelConfig fields, got []"),
    (RunConfig, {"data": "shakespeare"}, "RunConfig section 'data' must be a JSON object of DataConfig fields, "
                                         "got 'shakespeare'"),
    (FinetuneConfig, {"train": 3}, "FinetuneConfig section 'train' must be a JSON object of TrainConfig fields, got 3"),
])
def test_from_dict_refuses_a_section_that_is_not_a_json_object(cls, d, message):
    """A damaged config.json that still parses ([] or a section that is not an object): one line naming the
    section, not an AttributeError later."""
    with pytest.raises(ValueError) as info:
        from_dict(cls, d)
    assert str(info.value) == message


def test_from_dict_takes_a_nested_config_as_a_dict_or_as_itself():
    train = TrainConfig(max_iters=7)
    assert from_dict(FinetuneConfig, {"train": train}).train == train
    assert RunConfig.from_dict(RunConfig().to_dict()) == RunConfig()


def test_the_length_given_last_wins_and_both_lengths_are_refused():
    assert finetune_train(max_iters=50).epochs is None
    assert with_length({"max_iters": 2000, "epochs": 1.0}, {"epochs": 1.0}) == {"max_iters": None, "epochs": 1.0}
    with pytest.raises(ValueError, match="set one of max_iters .* or epochs"):
        TrainConfig(epochs=1.0)  # max_iters keeps its default 2000
    with pytest.raises(ValueError, match="set one of max_iters"):
        TrainConfig(max_iters=None)
    # nested updates follow the same rule: a fine-tuning loop of 3 epochs given max_iters trains that many steps
    assert updated(FinetuneConfig(), {"train": {"max_iters": 200}}).loop(10).max_iters == 200
    assert from_dict(FinetuneConfig, {"train": {"max_iters": 7}}).train.epochs is None


def test_updated_merges_nested_changes_and_validates():
    run = RunConfig()
    changed = updated(run, {"data": {"corpus": "my.txt"}, "train": {"lr": 2e-3}})
    assert changed.data.corpus == "my.txt" and changed.train.lr == 2e-3 and changed.model == run.model
    assert run.data.corpus == "shakespeare"  # the original is untouched
    with pytest.raises(ValueError, match="n_embd=30 is not divisible by n_head=4"):
        updated(run, {"model": {"n_embd": 30}})


def test_every_profile_gives_every_notebook_valid_settings():
    for name, profile in PROFILES.items():
        assert profile.for_notebook("02_pretraining").run.data.tokenizer == "bpe"
        settings = profile.for_notebook("03_finetuning")
        for mode in settings.modes:  # each mode's config, as compare_modes builds it, resolves
            config = updated(settings.config, {"mode": mode, **settings.overrides.get(mode, {})})
            assert config.loop(600).max_iters > 0, (name, mode)
    assert PROFILES["default"].finetuning.config.loop(5000).max_iters == 200
    assert PROFILES["default"].for_notebook("03_finetuning").overrides["hf"]["train"]["dtype"] == "bfloat16"
    with pytest.raises(ValueError, match="unknown profile 'fast'; choose one of smoke, default, full"):
        get_profile("fast")


@pytest.mark.parametrize("changes, message", [({"lr": math.inf}, "lr must be > 0 and finite, got inf"),
                                              ({"beta1": 2.0}, r"beta1 must be in \[0, 1\), got 2.0; pass e.g. --beta1"),
                                              ({"beta2": -0.1}, r"beta2 must be in \[0, 1\), got -0.1"),
                                              # a traceback from int(inf) when the steps were planned
                                              ({"max_iters": None, "epochs": math.inf}, "epochs must be > 0 and finite"),
                                              # numpy's error at the first evaluation, minutes in
                                              ({"seed": -1}, r"seed must be an integer in \[0, 2\*\*64\), got -1"),
                                              ({"seed": 2**64}, r"seed must be an integer in \[0, 2\*\*64\)")])
def test_loop_values_adamw_cannot_use_are_refused_before_training(changes, message):
    with pytest.raises(ValueError, match=message):  # (inf failed at step 2 as a NaN loss, beta1 2 in torch)
        TrainConfig(**changes)


def test_vocab_size_is_checked_only_for_bpe_the_only_tokenizer_that_reads_it():
    from workbench.config import DataConfig
    from workbench.translator import TranslationConfig

    for cls in (DataConfig, TranslationConfig):
        assert cls(tokenizer="char", vocab_size=100).vocab_size == 100
        assert cls(tokenizer="bpe", vocab_size=257).vocab_size == 257  # 256 bytes + <|endoftext|>
        with pytest.raises(ValueError, match="vocab_size=256 must exceed the 256 byte symbols of BPE"):
            cls(tokenizer="bpe", vocab_size=256)


@pytest.mark.parametrize("make, message", [
    (lambda: TrainConfig(lr="1e-3"), "TrainConfig.lr must be a number or null (unset), got '1e-3'"),
    (lambda: TrainConfig(max_iters=True), "TrainConfig.max_iters must be an integer or null (unset), got True"),
    (lambda: from_dict(RunConfig, {"model": {"bias": 1}}), "ModelConfig.bias must be true or false, got 1"),
    (lambda: from_dict(RunConfig, {"data": {"corpus": 3}}), "DataConfig.corpus must be a string, got 3"),
    (lambda: from_dict(FinetuneConfig, {"lora_r": 8.0}), "FinetuneConfig.lora_r must be an integer, got 8.0"),
])
def test_a_field_of_the_wrong_type_is_one_line_naming_it(make, message):
    """A hand-edited config.json or a dict given in Python: a ValueError naming the field and the type it takes
    (the range checks after it would meet it as a TypeError: '<' not supported between ...)."""
    with pytest.raises(ValueError) as info:
        make()
    assert str(info.value) == message
    assert TrainConfig(lr=1, weight_decay=0).lr == 1  # an integer is a number
    import numpy as np  # and numpy's numbers are numbers (a sweep's values): JSON gets Python's (json_safe)
    assert TrainConfig(lr=np.float32(0.5), seed=np.int64(3)).seed == 3


def test_preset_overrides_a_section_and_refuses_a_misspelled_one():
    from workbench.config import preset

    assert preset("smoke", model={"n_layer": 1}).model.n_layer == 1
    with pytest.raises(ValueError, match="unknown section.s. modle of preset.*use data, model, train"):
        preset("smoke", modle={"n_layer": 1})  # it was dropped unseen: two layers, no error
