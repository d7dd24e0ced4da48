"""MLServer's scikit-learn runtime, with the model's own error text kept.

Stock mlserver-sklearn 1.7.1 lets an exception of the model (scikit-learn's
ValueError for an input of the wrong shape, say) escape to the web framework,
which answers HTTP 500 with the body "Internal Server Error": the client never
learns what was wrong. This subclass turns such an error into MLServer's own
InferenceError, which MLServer answers with HTTP 400 and {"error": "<the
model's message>"}, as the protocol intends for a bad input. Nothing else
changes: loading, decoding and outputs are the stock runtime's.

asyncinfer treats both answers as a bad input (its OIP backend maps 400 and
500 alike); this only makes the FAILED result say why.
"""

from mlserver.errors import InferenceError, MLServerError
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver_sklearn import SKLearnModel


class SKLearnModelWithErrors(SKLearnModel):
    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        try:
            return await super().predict(payload)
        except MLServerError:
            raise
        except (ValueError, TypeError, IndexError) as e:
            raise InferenceError(f"{type(e).__name__}: {e}") from e
