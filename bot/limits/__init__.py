"""Rate limits, checked before a job is accepted. No Discord here: the adapter formats.

Limits are counted in images, per member and per server:

* a token bucket: ``burst`` images at once, then one more every ``refill_seconds``;
* a daily quota that resets at ``limits.reset_hour_utc`` (0 in config: no daily quota);
* at most ``max_concurrent_jobs`` jobs waiting or running.

The package follows those steps, one module each:

* :mod:`bot.limits.cost`: what a request costs, in images;
* :mod:`bot.limits.tiers`: which limits apply to whom (tiers, overrides, exemptions, bans);
* :mod:`bot.limits.buckets`: the bucket arithmetic and the refusal it adds up to;
* :mod:`bot.limits.limiter`: the transaction that decides, charges and queues at once.
"""

from bot.limits.buckets import BucketAllowance, LimitKind, Refusal, period_start
from bot.limits.cost import image_cost
from bot.limits.limiter import Accepted, Allowance, LimitDecision, RateLimiter
from bot.limits.tiers import Requester, Tier, TierOverrideError, override_tier
from bot.shape import JobShape

__all__ = [
    "Accepted",
    "Allowance",
    "BucketAllowance",
    "JobShape",
    "LimitDecision",
    "LimitKind",
    "RateLimiter",
    "Refusal",
    "Requester",
    "Tier",
    "TierOverrideError",
    "image_cost",
    "override_tier",
    "period_start",
]
