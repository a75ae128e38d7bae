"""The labelling app's typed config (profile section ``label``)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from common.errors import ConfigError

DEFAULT_INSTRUCTIONS = "Good = a positive, coherent movie-review continuation"


@dataclass
class LabelConfig:
    instructions: str = field(
        default=DEFAULT_INSTRUCTIONS, metadata={"help": "the criterion shown above every item (plain text)"}
    )
    overlap: int = field(
        default=1, metadata={"help": "how many different labellers judge each item (k > 1 gives overlap for agreement)"}
    )
    order: Literal["random", "uncertain"] = field(
        default="random",
        metadata={
            "help": "queue order: 'random', or 'uncertain' first (newest reward model's probability closest to 0.5)"
        },
    )
    lease_seconds: int = field(
        default=90,
        metadata={
            "help": "how long an item shown to one session is reserved for it; renewed every third of that "
            "while the item is on screen (and given back when the labeller leaves the page or signs out), "
            "so a closed tab gives its item back after at most this long"
        },
    )
    min_dwell_ms: int = field(
        default=300,
        metadata={
            "help": "a key press judges an item only after it has been on screen this long, and only as a fresh "
            "press (a held key judges once); 0 turns the check off"
        },
    )
    session_goal: int = field(
        default=50,
        metadata={
            "help": "judgements a labeller aims for in one sitting, shown as progress ('12 of 50 this session'); "
            "0 hides it"
        },
    )
    guidelines: str | None = field(
        default=None,
        metadata={
            "help": "the labelling guidelines file shown on the Guidelines page (null: $RLHF_GUIDELINES, else "
            "configs/guidelines.md)"
        },
    )
    prefetch: int = field(
        default=64,
        metadata={
            "help": "completions kept generated ahead in the queue: when fewer are left for a labeller "
            "a background refill starts (nothing is ever generated while a labeller waits)"
        },
    )
    refill_batch: int = field(default=128, metadata={"help": "how many completions one background refill generates"})
    auto_refill: bool = field(
        default=True, metadata={"help": "start a background refill automatically when the queue runs low"}
    )
    session_hours: float = field(
        default=12,
        metadata={
            "help": "how long a signed-in browser stays signed in across reloads (accounts and shared-token mode; "
            "an HttpOnly cookie, docs/security.md); signing out, a password reset or a disabled account ends it sooner"
        },
    )
    identity_provider: str = field(
        default="",
        metadata={
            "help": "accounts mode: also offer sign-in with your organisation's identity provider (st.login, "
            "OpenID Connect): '' = off, 'default' = the provider set directly in [auth] of .streamlit/secrets.toml, "
            "NAME = its [auth.NAME] section; needs Authlib>=1.3.2 (docs/security.md)"
        },
    )
    identity_claim: str = field(
        default="email",
        metadata={
            "help": "the identity's claim (st.user) whose whole value must be the name of an existing, enabled "
            "account (compared ignoring case); accounts are still made only by `python -m db users add`"
        },
    )
    password_sign_in: bool = field(
        default=True,
        metadata={
            "help": "accounts mode: offer the name-and-password form (false: only the identity provider's "
            "button, which needs identity_provider)"
        },
    )
    policy: str = field(
        default="newest_registered",
        metadata={
            "help": "policy used for refills: 'newest_registered' (newest policy registered in the database, else "
            "the newest PPO run, else the base policy), 'latest' (the newest PPO run), 'base' or a model folder"
        },
    )

    def validate(self) -> None:
        if not self.instructions.strip():
            raise ConfigError("label.instructions is empty.", "write the criterion labellers should apply.")
        if self.overlap < 1:
            raise ConfigError(f"label.overlap={self.overlap} must be at least 1.", "use 1 (no overlap) or k > 1.")
        if self.lease_seconds < 3:
            raise ConfigError(
                f"label.lease_seconds={self.lease_seconds} must be at least 3 (it is renewed every third of it).",
                "use e.g. 90.",
            )
        if not 0 <= self.min_dwell_ms <= 10_000:
            raise ConfigError(
                f"label.min_dwell_ms={self.min_dwell_ms} must be between 0 and 10000.", "use e.g. 300 (0 = no check)."
            )
        if not 0 <= self.session_goal <= 100_000:
            raise ConfigError(
                f"label.session_goal={self.session_goal} must be between 0 and 100000.", "use e.g. 50 (0 = no goal)."
            )
        if self.prefetch < 0:
            raise ConfigError(f"label.prefetch={self.prefetch} must be >= 0.", "use e.g. 64 (0 turns auto refill off).")
        if self.refill_batch < 1:
            raise ConfigError(f"label.refill_batch={self.refill_batch} must be positive.", "use e.g. 128.")
        if not 0 < self.session_hours <= 24 * 90:
            raise ConfigError(
                f"label.session_hours={self.session_hours} must be more than 0 and at most {24 * 90}.", "use e.g. 12."
            )
        if not self.policy.strip():
            raise ConfigError("label.policy is empty.", "use 'newest_registered', 'latest' or a model folder.")
        if self.identity_provider and not re.fullmatch(r"[A-Za-z0-9-]{1,64}", self.identity_provider):
            raise ConfigError(
                f"label.identity_provider={self.identity_provider!r} is not a provider name.",
                "use '' (off), 'default' (the provider set in [auth]) or the NAME of an [auth.NAME] section: "
                "letters, digits and '-' (Streamlit refuses '_').",
            )
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_.:-]{0,63}", self.identity_claim) or self.identity_claim in (
            "is_logged_in",
            "tokens",
            "provider",
            "origin",
        ):
            raise ConfigError(
                f"label.identity_claim={self.identity_claim!r} is not a claim of the identity.",
                "use e.g. 'email' (or 'preferred_username'), a claim your identity provider sends.",
            )
        if not self.password_sign_in and not self.identity_provider:
            raise ConfigError(
                "label.password_sign_in is false but label.identity_provider is off: nobody could sign in.",
                "set label.identity_provider, or password_sign_in: true.",
            )
