"""The training throughput every run reports."""

import functools

import lightning as L
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from selalign.callbacks import TrainTokensPerSecond
from selalign.data import FilesDataModule
from selalign.module import PreferenceModule
from selalign.objectives import DPO


def test_tokens_per_second_counts_the_real_tokens_of_every_trained_row(tiny_lm, tiny_ref, pairs_file):
    datamodule = FilesDataModule(path=str(pairs_file), validation_fraction=0.2, tokenizer=AutoTokenizer.from_pretrained(tiny_lm), batch_size=4)
    datamodule.setup("fit")
    pairs = {pair["index"]: pair for pair in datamodule.splits["train"]}
    first_batches = [batch["pair_index"].tolist() for _, batch in zip(range(3), datamodule.train_dataloader())]
    expected = sum(2 * len(pairs[i]["prompt_ids"]) + len(pairs[i]["chosen_ids"]) + len(pairs[i]["rejected_ids"]) for batch in first_batches for i in batch)
    module = PreferenceModule(AutoModelForCausalLM.from_pretrained(tiny_lm), AutoModelForCausalLM.from_pretrained(tiny_ref), DPO(beta=0.1), functools.partial(torch.optim.AdamW, lr=1e-3))
    throughput = TrainTokensPerSecond()
    trainer = L.Trainer(max_steps=3, logger=False, enable_checkpointing=False, enable_progress_bar=False, limit_val_batches=0, callbacks=[throughput])
    trainer.fit(module, datamodule=datamodule)
    assert throughput.tokens == expected
    assert float(trainer.callback_metrics["time/train_tokens_per_second"]) > 0
