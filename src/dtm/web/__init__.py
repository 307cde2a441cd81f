"""Helpers for the business services DTM calls: read a branch call's transaction info and
answer with DTM's result codes, for Starlette/FastAPI, Flask and Django.

This package's top level is framework-free; each framework has its own module, imported
only when asked for, so `import dtm` (or `import dtm.web`) never imports a web framework:

- `dtm.web.starlette`: `trans_info` / `branch_barrier` (plain functions of the request, usable
  as FastAPI dependencies) and `add_dtm_exception_handlers(app)`.
- `dtm.web.flask`: `trans_info()` / `branch_barrier()` reading `flask.request`,
  `register_dtm_error_handlers(app)` and the `@dtm_branch` view decorator.
- `dtm.web.django`: `trans_info(request)` / `branch_barrier(request)`, the `@dtm_branch` view
  decorator and `DtmMiddleware`.

Result mapping (`result_of`), as upstream's `dtmcli.Result2HttpJSON` and DTM's branch
protocol: FailureError -> 409 FAILURE, OngoingError -> 425 ONGOING, no exception -> 200
SUCCESS, DuplicateError -> 200 SUCCESS (see `result_of` for why); anything else is left to
the framework, which answers 500 and DTM retries.
"""

from __future__ import annotations

from dtm.web._core import TransInfo, result_of

__all__ = ["TransInfo", "result_of"]
