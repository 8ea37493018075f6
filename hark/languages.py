"""Language codes and the `multi*` detection groups of the Pulse API."""

from __future__ import annotations

# Whisper's languages (ISO 639-1 where one exists), the widest set a multilingual checkpoint covers.
WHISPER_LANGUAGES: tuple[str, ...] = (
    "en", "zh", "de", "es", "ru", "ko", "fr", "ja", "pt", "tr", "pl", "ca", "nl", "ar", "sv",
    "it", "id", "hi", "fi", "vi", "he", "uk", "el", "ms", "cs", "ro", "da", "hu", "ta", "no",
    "th", "ur", "hr", "bg", "lt", "la", "mi", "ml", "cy", "sk", "te", "fa", "lv", "bn", "sr",
    "az", "sl", "kn", "et", "mk", "br", "eu", "is", "hy", "ne", "mn", "bs", "kk", "sq", "sw",
    "gl", "mr", "pa", "si", "km", "sn", "yo", "so", "af", "oc", "ka", "be", "tg", "sd", "gu",
    "am", "yi", "lo", "uz", "fo", "ht", "ps", "tk", "nn", "mt", "sa", "lb", "my", "bo", "tl",
    "mg", "as", "tt", "haw", "ln", "ha", "ba", "jw", "su", "yue",
)  # fmt: skip

#: Detection groups: `multi` means any language the checkpoint covers.
MULTI_GROUPS: dict[str, tuple[str, ...] | None] = {
    "multi": None,
    "multi-eu": (
        "en", "de", "fr", "es", "it", "pt", "nl", "pl", "sv", "da", "no", "nn", "fi", "cs", "sk",
        "hu", "ro", "bg", "el", "hr", "sl", "lt", "lv", "et", "ga", "mt", "ca", "eu", "gl", "uk",
        "ru", "sr", "bs", "mk", "sq", "is", "lb", "cy", "br", "oc", "be",
    ),
    "multi-asian": (
        "zh", "ja", "ko", "vi", "th", "id", "ms", "tl", "km", "lo", "my", "yue", "mn", "jw", "su",
        "hi", "bn", "ta", "te", "ur",
    ),
    "multi-indic": (
        "hi", "bn", "ta", "te", "mr", "gu", "kn", "ml", "pa", "ur", "as", "ne", "sa", "si", "sd", "en",
    ),
}  # fmt: skip


def is_multi(language: str) -> bool:
    """True for the detection requests (`multi`, `multi-eu`, ...)."""
    return language in MULTI_GROUPS


def is_language_code(language: str) -> bool:
    """A plausible ISO 639-1 (or Whisper's 3-letter extras) code."""
    return language.isascii() and language.isalpha() and language.islower() and 2 <= len(language) <= 3
