"""Inline suppression policies (SPEC §3): pure decision units composed by one chain.

Layering: imports only ``storage.records`` from outside; ``relay`` uses this package, never the
other way round. Storage is reached only through the :class:`SuppressionIndex` protocol.
"""

from policies.address import Address, FormatError, parse_address
from policies.base import Decision, Policy, RecipientContext, SuppressionIndex, Verdict
from policies.block import BlockPolicy
from policies.bounce import BouncePolicy, TencentRules, bounce_expiry, is_tencent
from policies.chain import CheckResult, PolicyChain, default_chain
from policies.complaint import ComplaintPolicy
from policies.no_interception import NoInterceptionPolicy
from policies.reasons import (
    REASON_BLOCK,
    REASON_BOUNCE,
    REASON_COMPLAINT,
    REASON_FORMAT_ERROR,
    REASON_UNSUBSCRIBE,
)
from policies.syntax import SyntaxPolicy
from policies.unsubscribe import UnsubscribePolicy

__all__ = [
    "REASON_BLOCK",
    "REASON_BOUNCE",
    "REASON_COMPLAINT",
    "REASON_FORMAT_ERROR",
    "REASON_UNSUBSCRIBE",
    "Address",
    "BlockPolicy",
    "BouncePolicy",
    "CheckResult",
    "ComplaintPolicy",
    "Decision",
    "FormatError",
    "NoInterceptionPolicy",
    "Policy",
    "PolicyChain",
    "RecipientContext",
    "SuppressionIndex",
    "SyntaxPolicy",
    "TencentRules",
    "UnsubscribePolicy",
    "Verdict",
    "bounce_expiry",
    "default_chain",
    "is_tencent",
    "parse_address",
]
