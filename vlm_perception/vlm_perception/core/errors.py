"""One exception type per subsystem; messages say what was wrong and what to do."""


class VlmPerceptionError(Exception):
    """Base of every error this package raises on bad input or configuration."""


class QueryError(VlmPerceptionError):
    """A language query that cannot be evaluated (empty, too long, no phrases)."""


class ImageError(VlmPerceptionError):
    """An image that cannot be converted (encoding, sizes, corrupt data)."""


class BackendError(VlmPerceptionError):
    """A backend that failed while running on an image."""


class BackendLoadError(VlmPerceptionError):
    """A backend or model that could not be constructed or loaded."""


class GraspError(VlmPerceptionError):
    """Depth or camera intrinsics that a grasp cannot be computed from."""


class ConfigurationError(VlmPerceptionError):
    """A parameter value the node cannot start with."""


class ReportError(VlmPerceptionError):
    """A recorded run that cannot be reported on (missing topics, unreadable bag)."""


class ReplayError(VlmPerceptionError):
    """A bag that cannot be read, written or replayed (missing, damaged, unsupported types)."""


class LabelsError(ReportError):
    """A labels file that cannot be scored against (syntax, intervals, names or times that do not fit)."""
