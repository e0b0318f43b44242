"""vlm_lora's building blocks on each tiny family: the models load through the Auto classes, labels cover the
response and its end token only, LoRA on the language model learns the generated set, generation returns only
the new text, and truncation cuts the response, never the image tokens."""

from __future__ import annotations

import csv
import threading
from pathlib import Path

import pytest
import torch

from spottrain_contract.vlm import TINY_FAMILIES
from spottrain.tasks.vlm.generated import ensure_generated
from spottrain.tasks.vlm.processors import load_processor
from spottrain.tasks.vlm.prompts import (IGNORE, PLAIN_PROMPT, decode_new_tokens, generation_batch,
                                         resolve_family, training_batch)
from spottrain.tasks.vlm.tiny import write_tiny_model

LORA_TARGETS = r".*language_model\..*\.(q_proj|v_proj)"  # the language model's; not the vision tower's or Q-Former's
COLOURS, SHAPES = ("red", "green", "blue", "yellow"), ("square", "circle", "triangle")
ANSWERS = {"What colour is the shape?": COLOURS, "What shape is it?": SHAPES,
           "Describe the image.": {f"a {colour} {shape}" for colour in COLOURS for shape in SHAPES}}
PROCESSORS = {"llava": "LlavaProcessor", "qwen2_vl": "Qwen2VLProcessor", "blip2": "Blip2Processor"}
MODELS = {"llava": "LlavaForConditionalGeneration", "qwen2_vl": "Qwen2VLForConditionalGeneration",
          "blip2": "Blip2ForConditionalGeneration"}


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> dict[str, Path]:
    return ensure_generated(tmp_path_factory.mktemp("vlm-data"))


@pytest.fixture(scope="module", params=TINY_FAMILIES)
def tiny(request, tmp_path_factory) -> tuple[str, Path]:
    family = request.param
    return family, write_tiny_model(family, tmp_path_factory.mktemp("tiny") / family)


def rows(csv_path: Path, n: int) -> tuple[list, list[str], list[str]]:
    from PIL import Image

    table = list(csv.reader(csv_path.open()))[1:n + 1]
    return ([Image.open(csv_path.parent / url).convert("RGB") for url, _, _ in table],
            [question for _, question, _ in table], [answer for _, _, answer in table])


def load(model_dir: Path):
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(model_dir)
    return model, load_processor(model_dir), resolve_family("auto", model.config.model_type)


def lora(model):
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=LORA_TARGETS))


def test_tiny_models_load_through_the_auto_classes_and_their_tokenizers_round_trip_the_answers(tiny, generated):
    family, model_dir = tiny
    model, processor, resolved = load(model_dir)
    assert (resolved, type(model).__name__, type(processor).__name__) == (family, MODELS[family], PROCESSORS[family])
    assert sum(p.numel() for p in model.parameters()) < 300_000
    answers = {row[2] for split in ("train", "test") for row in csv.reader(generated[split].open())}
    for text in answers:
        assert processor.tokenizer.decode(processor.tokenizer.encode(text, add_special_tokens=False)) == text


def test_labels_are_the_response_and_its_end_token_after_the_prompt_generation_sees(tiny, generated):
    family, model_dir = tiny
    _, processor, family = load(model_dir)
    images, prompts, responses = rows(generated["train"], 3)
    batch = training_batch(processor, family, images, prompts, responses, max_length=512, system_message=None)
    prompt_batch = generation_batch(processor, family, images, prompts, system_message=None)
    tokenizer = processor.tokenizer
    for i, response in enumerate(responses):
        labelled = (batch["labels"][i] != IGNORE).nonzero().flatten()
        start, end = int(labelled[0]), int(labelled[-1]) + 1
        assert len(labelled) == end - start and batch["attention_mask"][i, end:].sum() == 0  # one span, then pad
        assert torch.equal(batch["labels"][i, start:end], batch["input_ids"][i, start:end])
        assert tokenizer.decode(batch["labels"][i, start:end], skip_special_tokens=True).strip() == response
        assert batch["labels"][i, end - 1] == tokenizer.eos_token_id  # the model learns to stop
        prompt_ids = prompt_batch["input_ids"][i][prompt_batch["attention_mask"][i].bool()]
        assert torch.equal(batch["input_ids"][i, :start], prompt_ids)


def test_lora_on_the_language_model_learns_and_generation_returns_only_the_answers(tiny, generated):
    from peft.tuners.lora import LoraLayer

    family, model_dir = tiny
    model, processor, family = load(model_dir)
    model = lora(model)
    adapted = [name for name, module in model.named_modules() if isinstance(module, LoraLayer)]
    assert len(adapted) == 4 and all("language_model." in name for name in adapted), adapted
    images, prompts, responses = rows(generated["train"], 8)
    batch = training_batch(processor, family, images, prompts, responses, max_length=512, system_message=None)

    loss = model(**batch).loss
    assert torch.isfinite(loss)
    loss.backward()
    trained = {name: p for name, p in model.named_parameters() if p.requires_grad}
    assert trained and all("lora_" in name for name in trained)
    assert all(p.grad.abs().sum() > 0 for name, p in trained.items() if "lora_B" in name)

    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(trained.values(), lr=1e-2)
    optimizer.zero_grad()
    losses = []
    for _ in range(30):
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.25 * losses[0], losses

    model.eval()
    inputs = generation_batch(processor, family, images, prompts, system_message=None)
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=16, do_sample=False)
    answers = decode_new_tokens(processor, output, inputs["input_ids"].shape[1])
    assert len(answers) == len(prompts) and all(isinstance(answer, str) for answer in answers)
    assert not any(prompt in answer or "ASSISTANT" in answer for prompt in prompts for answer in answers), answers
    assert sum(a == r for a, r in zip(answers, responses)) >= len(responses) // 2, (answers, responses)


def test_left_padding_leaves_the_next_token_logits_unchanged(tiny, generated):
    family, model_dir = tiny
    model, processor, family = load(model_dir)
    images, _, _ = rows(generated["train"], 2)
    prompts = ["What shape is it?", "Describe the image, please, in a few words."]
    padded = generation_batch(processor, family, images, prompts, system_message="Be brief.")
    alone = generation_batch(processor, family, images[:1], prompts[:1], system_message="Be brief.")
    assert padded["attention_mask"][0, 0] == 0 and padded["attention_mask"][0, -1] == 1  # padded on the left
    with torch.no_grad():
        batched = model(**padded).logits[0, -1]
        single = model(**alone).logits[0, -1]
    assert torch.allclose(batched, single, atol=1e-4)


def test_truncation_cuts_the_response_never_the_image_tokens(tiny, generated):
    family, model_dir = tiny
    model, processor, family = load(model_dir)
    images, prompts, _ = rows(generated["train"], 1)
    prompt_ids = generation_batch(processor, family, images, prompts, system_message=None)["input_ids"][0]
    image_token = model.config.image_token_id
    response = "a red circle " * 20
    batch = training_batch(processor, family, images, prompts, [response], max_length=len(prompt_ids) + 5,
                           system_message=None)
    assert batch["input_ids"].shape == (1, len(prompt_ids) + 5)
    assert (batch["input_ids"][0] == image_token).sum() == (prompt_ids == image_token).sum() > 0
    whole = training_batch(processor, family, images, prompts, [response], max_length=512, system_message=None)
    assert torch.equal(batch["labels"][0][batch["labels"][0] != IGNORE],
                       whole["labels"][0][whole["labels"][0] != IGNORE][:5])  # the response's first 5 tokens
    with pytest.raises(ValueError, match="^train.data.max_length: expected more than the") as error:
        training_batch(processor, family, images, prompts, [response], max_length=len(prompt_ids),
                       system_message=None)
    assert "\n" not in str(error.value)


def test_a_family_outside_the_list_takes_its_processors_chat_template_or_the_plain_prompt(tmp_path, generated):
    images, prompts, _ = rows(generated["train"], 1)
    llava = load_processor(write_tiny_model("llava", tmp_path / "llava"))
    blip2 = load_processor(write_tiny_model("blip2", tmp_path / "blip2"))
    assert resolve_family("auto", "blip-2") == "blip2" and resolve_family("llava_next", "llava") == "llava_next"
    assert resolve_family("auto", "idefics3") == "idefics3"

    def prompt(processor, family):
        ids = generation_batch(processor, family, images, prompts, system_message=None)["input_ids"][0]
        return processor.tokenizer.decode(ids, skip_special_tokens=True)

    assert prompt(llava, "idefics3") == prompt(llava, "llava") == f"USER: \n{prompts[0]} ASSISTANT:"
    assert prompt(blip2, "idefics3") == prompt(blip2, "blip2") == PLAIN_PROMPT.format(query=prompts[0])


def test_tiny_models_are_seeded_written_once_and_safe_to_write_at_once(tmp_path):
    with pytest.raises(ValueError, match="^train.model.id: expected a tiny family of llava, qwen2_vl, blip2"):
        write_tiny_model("opt", tmp_path / "opt")
    first = write_tiny_model("blip2", tmp_path / "a", seed=3)
    written = (first / "model.safetensors").stat().st_mtime_ns
    assert write_tiny_model("blip2", first, seed=3) == first
    assert (first / "model.safetensors").stat().st_mtime_ns == written  # reused, not rewritten
    assert (write_tiny_model("blip2", tmp_path / "b", seed=3) / "model.safetensors").read_bytes() == \
           (first / "model.safetensors").read_bytes()
    assert (write_tiny_model("blip2", tmp_path / "c", seed=4) / "model.safetensors").read_bytes() != \
           (first / "model.safetensors").read_bytes()

    results, errors = [], []

    def write():
        try:
            results.append(write_tiny_model("llava", tmp_path / "shared"))
        except Exception as error:  # noqa: BLE001 - the assertion below reports it
            errors.append(error)

    writers = [threading.Thread(target=write) for _ in range(3)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    assert not errors and results == [tmp_path / "shared"] * 3
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a", "b", "c", "shared"]  # no partial left
    load(tmp_path / "shared")


def test_the_generated_set_has_its_columns_resolvable_images_and_the_same_bytes_for_a_seed(tmp_path, generated):
    expected = {"train": (["url", "instruction", "response"], 96), "val": (["url", "instruction", "response"], 16),
                "test": (["url", "query", "annotation"], 16)}
    assert set(generated) == set(expected)
    for split, (columns, count) in expected.items():
        table = list(csv.DictReader(generated[split].open()))
        assert list(table[0]) == columns and len(table) == count
        for url, question, answer in (row.values() for row in table):
            assert not Path(url).is_absolute() and (generated[split].parent / url).is_file()
            assert answer in ANSWERS[question]  # the answer follows from the question

    again, other = ensure_generated(tmp_path / "again"), ensure_generated(tmp_path / "other", seed=1)
    files = sorted(path.relative_to(generated["train"].parent)
                   for path in generated["train"].parent.rglob("*") if path.is_file())
    assert files == sorted(path.relative_to(tmp_path / "again") for path in (tmp_path / "again").rglob("*")
                           if path.is_file())
    assert all((generated["train"].parent / f).read_bytes() == (tmp_path / "again" / f).read_bytes() for f in files)
    assert (other["train"]).read_bytes() == again["train"].read_bytes()  # same rows, other pixels
    assert (tmp_path / "other" / "images/train_000.png").read_bytes() != \
           (tmp_path / "again" / "images/train_000.png").read_bytes()
