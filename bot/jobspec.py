"""What a job stores, typed: the validated request, its channel, and the render planned once.

A job is planned when it is accepted (:func:`bot.planning.plan_job`): wildcards expanded,
presets and emphasis applied, one seed per image. The worker renders that stored plan; at
render time only a cheap re-check of its final prompt under the server's policy of the
moment runs (:func:`bot.planning.decide`), never a rebuild. The stored negative prompt is
the built one, before the channel's policy adds its negatives: the re-check adds those of
the policy in force then.

Torch-free (the storage layer reads it): :mod:`bot.engine.job` is a leaf.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict

from bot.engine.job import RenderJob
from bot.moderation.channels import ChannelContext
from bot.request import GenerationRequest
from bot.shape import JobShape


class StoredPlan(BaseModel):
    """The render planned when the job was accepted, and the rating its prompt was built
    with (what the policy's re-check reads)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    render: RenderJob
    rating: str | None = None


def request_shape(request: GenerationRequest) -> JobShape:
    """The shape of the job ``request`` becomes (no prompt building needed)."""
    return RenderJob(
        "",
        "",
        request.width,
        request.height,
        request.steps,
        request.cfg,
        request.sampler,
        tuple(range(request.count)),
        request.hires,
    ).shape


class JobSpec(BaseModel):
    """Everything a job stores about what to render and where it was asked for.

    ``plan`` is None only for a job queued before plans were stored (see the migration
    ``0002``): it is planned once, on first use.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    request: GenerationRequest
    channel: ChannelContext
    plan: StoredPlan | None = None

    @property
    def shape(self) -> JobShape:
        """The planned render's shape (the request's, for a job not planned yet)."""
        if self.plan is None:
            return request_shape(self.request)
        return self.plan.render.shape

    # The row layout: the ``request`` column holds the request and the channel's flags
    # (as since the first schema), the ``plan`` column the stored plan.
    def request_row(self) -> dict[str, Any]:
        return {
            "request": self.request.model_dump(mode="json"),
            "age_restricted": self.channel.age_restricted,
            "is_dm": self.channel.is_dm,
            "is_thread": self.channel.is_thread,
        }

    def plan_row(self) -> dict[str, Any] | None:
        return None if self.plan is None else self.plan.model_dump(mode="json")

    @staticmethod
    def request_of(row: Mapping[str, Any]) -> GenerationRequest:
        return GenerationRequest.model_validate(row["request"])

    @staticmethod
    def channel_of(row: Mapping[str, Any]) -> ChannelContext:
        return ChannelContext(
            bool(row.get("age_restricted")), bool(row.get("is_dm")), bool(row.get("is_thread"))
        )

    @staticmethod
    def plan_of(row: Mapping[str, Any] | None) -> StoredPlan | None:
        return None if row is None else StoredPlan.model_validate(row)

    @classmethod
    def of_row(cls, request: Mapping[str, Any], plan: Mapping[str, Any] | None) -> JobSpec:
        return cls(
            request=cls.request_of(request), channel=cls.channel_of(request), plan=cls.plan_of(plan)
        )
