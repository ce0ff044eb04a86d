#!/usr/bin/env python3
"""moto's server (what ./scripts/test starts), with one fix so that it behaves as AWS documents.

SendTaskFailure takes an ``error`` and a ``cause``, and a Catch on the waiting state gets both
(https://docs.aws.amazon.com/step-functions/latest/apireference/API_SendTaskFailure.html).
moto 5.2.5's server reads only the error and drops the cause, although its executor would pass it
on: the commit lane's failure emails and error reports would lose their message. This passes the
cause through, and changes nothing else. Arguments are moto_server's.
"""

from moto.core.responses import EmptyResult
from moto.server import main
from moto.stepfunctions.responses import StepFunctionResponse


def send_task_failure(self):
    self.stepfunction_backend.send_task_failure(
        self._get_param("taskToken"),
        error=self._get_param("error"),
        cause=self._get_param("cause"),
    )
    return EmptyResult()


StepFunctionResponse.send_task_failure = send_task_failure

if __name__ == "__main__":
    main()
