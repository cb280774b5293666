"""Data for Megatron-LTD: tokenizers, corpus preprocessing, GPT/BERT dataset providers, loader.

Public entry points (import from the submodules; importing this package is cheap):

* ``megatron.data.tokenizers``: TokenizerConfig, build_tokenizer, add_tokenizer_args,
  tokenizer_config_from_args
* ``megatron.data.config``: DataConfig, add_data_args, data_config_from_args
* ``megatron.data.providers``: build_gpt_datasets, build_bert_datasets
* ``megatron.data.loader``: build_data_loader
* ``megatron.data.preprocess``: PreprocessConfig, preprocess
* ``megatron.data.sample_corpus``: prepare_sample_data, build_sample_corpus
"""
