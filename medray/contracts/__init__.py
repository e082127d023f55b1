"""Model contracts: what each model is shown and what it must write, in one place each.

Every job (SFT, GRPO, batch inference, evaluation) and every Serve deployment imports
these modules; nothing else builds a prompt, a target or a parser of its own.

* :mod:`medray.contracts.reasoner`: the vision-language reasoner (system prompt, question
  template, image placement, JSON target from a row, lenient and streaming parsers,
  generation settings, the answer's confidence);
* :mod:`medray.contracts.counterfactual`: the reasoner's counterfactual images (region
  choice and inpainting) for GRPO's reward, its in-job evaluation and the report's flip
  rates;
* :mod:`medray.contracts.summariser`: reasoning steps -> short diagnosis (prompt, target);
* :mod:`medray.contracts.medqa`: text medical QA (prompt with or without options, answer
  format and its parser).

Loading a trained model is :mod:`medray.models.finetuned`; generating with it is
:mod:`medray.models.generate`.
"""
