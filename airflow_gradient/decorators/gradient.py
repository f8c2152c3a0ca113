"""``@task.gradient``: the decorated function returns the input, the task sends it to Gradient."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any, ClassVar

from airflow.sdk import Context
from airflow.sdk.bases.decorator import DecoratedOperator, TaskDecorator, determine_kwargs, task_decorator_factory
from airflow.sdk.definitions._internal.types import SET_DURING_EXECUTION
from airflow.sdk.definitions.context import context_merge
from airflow_gradient import arguments
from airflow_gradient.operators.base import fail_without_retries
from airflow_gradient.operators.response import GradientResponseOperator


class _GradientDecoratedOperator(DecoratedOperator, GradientResponseOperator):
    """Calls the Python function for the input, then runs :class:`GradientResponseOperator`.

    :param python_callable: the decorated function; it returns the ``input`` (a non-empty string or
        a list of input items) and runs in the task, with the task's context.
    :param op_args: positional arguments for ``python_callable``.
    :param op_kwargs: keyword arguments for ``python_callable``.

    Every other argument is one of :class:`GradientResponseOperator`, except ``input``.
    """

    template_fields = (*DecoratedOperator.template_fields, *GradientResponseOperator.template_fields)
    template_fields_renderers: ClassVar[dict[str, str]] = {
        **DecoratedOperator.template_fields_renderers,
        **GradientResponseOperator.template_fields_renderers,
    }
    custom_operator_name = "@task.gradient"
    # The input is only known once the function ran: show the real one in the rendered fields.
    overwrite_rtif_after_execution = True

    def __init__(
        self,
        *,
        python_callable: Callable[..., Any],
        op_args: Collection[Any] | None = None,
        op_kwargs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            python_callable=python_callable,
            op_args=op_args,
            op_kwargs=op_kwargs,
            input=SET_DURING_EXECUTION,
            **kwargs,
        )

    def execute(self, context: Context) -> Any:
        context_merge(context, self.op_kwargs)
        kwargs = determine_kwargs(self.python_callable, self.op_args, context)
        self.input = self.python_callable(*self.op_args, **kwargs)
        if not self.input or not isinstance(self.input, (str, list)):
            with fail_without_retries():
                arguments.refuse(
                    "input", "a non-empty string or a list of input items",
                    reason=f"@task.gradient function {self.python_callable.__name__!r} returned "
                           f"{arguments.short(self.input)}",
                )
        return GradientResponseOperator.execute(self, context)


def gradient_task(python_callable: Callable[..., Any] | None = None, **kwargs: Any) -> TaskDecorator:
    """Wrap a function that returns a prompt into a Gradient request.

    Accepts every argument of :class:`GradientResponseOperator` except ``input``::

        @task.gradient(model="llama3.3-70b-instruct", max_output_tokens=200)
        def summarise(text: str) -> str:
            return f"Summarise: {text}"

    The task pushes the same XCom dict as the operator. It maps like any task
    (``summarise.expand(text=[...])``).
    """
    return task_decorator_factory(
        python_callable=python_callable,
        decorated_operator_class=_GradientDecoratedOperator,
        **kwargs,
    )
