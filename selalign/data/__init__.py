"""Preference data: row formats and validation, tokenization, batching, the LightningDataModules."""

from selalign.data.collator import PreferenceCollator
from selalign.data.datamodule import PreferenceDataModule
from selalign.data.formats import InvalidRowError, render_prompt, row_problem, tokenize_pair
from selalign.data.sources import DataFileError, FilesDataModule, HubDataModule

__all__ = ["DataFileError", "FilesDataModule", "HubDataModule", "InvalidRowError", "PreferenceCollator", "PreferenceDataModule", "render_prompt", "row_problem", "tokenize_pair"]
