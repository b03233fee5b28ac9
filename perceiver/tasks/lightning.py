"""The Lightning modules of the built-in tasks: each pairs a task's model with its ``batch_metrics``.

They live apart from the models so that ``import perceiver.tasks.clm`` (and the CLI's help) does not import
Lightning; ``perceiver.tasks.clm.LitCausalLanguageModel`` and its siblings still resolve to these classes.
"""

from __future__ import annotations

from perceiver.tasks import clf, clm, mlm
from perceiver.training.lightning import LitTask


class LitCausalLanguageModel(LitTask):
    """Trains a :class:`~perceiver.tasks.clm.CausalLanguageModel`: cross-entropy on the latent positions; logs
    loss and bits per byte. Batches are ``(labels, input_ids, pad_mask)`` with labels -100 where no prediction is
    wanted."""

    task_name = "clm"
    throughput_unit = "tok/s"
    config_class = clm.CausalLanguageModelConfig
    model_class = clm.CausalLanguageModel
    compute = staticmethod(clm.batch_metrics)


class LitMaskedLanguageModel(LitTask):
    """Trains a :class:`~perceiver.tasks.mlm.MaskedLanguageModel` on byte corpora; logs loss and masked-token
    accuracy (see :func:`perceiver.tasks.mlm.batch_metrics`)."""

    task_name = "mlm"
    throughput_unit = "tok/s"
    config_class = mlm.MaskedLanguageModelConfig
    model_class = mlm.MaskedLanguageModel
    compute = staticmethod(mlm.batch_metrics)


class LitClassifier(LitTask):
    """Trains a :class:`~perceiver.tasks.clf.Classifier`: cross-entropy, accuracy. With ``encoder_from`` the
    encoder starts from a trained model, and ``freeze_encoder`` keeps it fixed."""

    task_name = "clf"
    throughput_unit = "items/s"
    config_class = clf.ClassifierConfig
    model_class = clf.Classifier
    compute = staticmethod(clf.batch_metrics)

    def __init__(self, config, optimizer=None):
        super().__init__(config, optimizer)
        if self.model.config.encoder_from:
            clf.init_encoder_from(self.model, self.model.config.encoder_from)
        if self.model.config.freeze_encoder:
            clf.freeze_encoder(self.model)
