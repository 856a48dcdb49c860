"""A real fast tokenizer trained here (byte-level BPE, EOS appended by its post-processor)."""
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

CORPUS = [
    "There is a small left pleural effusion.",
    "No pneumothorax. Heart size is normal.",
    "Two right-sided nodules, the largest measuring 12 mm.",
    "Moderate cardiomegaly; bilateral infiltrates are not seen.",
    "Épanchement pleural gauche — 3 cm; Ödem?",
]


@pytest.fixture(scope="package")
def tokenizer():
    """A transformers PreTrainedTokenizerFast over a BPE vocabulary trained on CORPUS in ~0.1 s."""
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["</s>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS * 5, trainer)
    eos = tok.token_to_id("</s>")
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=True),
        processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", eos)]),
    ])
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", pad_token="<pad>")
