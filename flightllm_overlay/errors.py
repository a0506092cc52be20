"""Error types users can catch: every failure the toolkit reports is a FlightLLMError."""


class FlightLLMError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(FlightLLMError):
    """A hardware target description is missing, malformed or inconsistent."""


class CheckpointError(FlightLLMError):
    """A model checkpoint is missing, corrupt or of an unsupported architecture."""


class IllegalInstructionError(FlightLLMError):
    """An instruction word cannot be decoded, or a field is out of its legal range."""


class ProgramError(FlightLLMError):
    """A program is malformed, or does something the hardware forbids while it runs."""


class AddressError(ProgramError):
    """A program or a buffer reaches outside the memory it is allowed to use."""


class CompileError(FlightLLMError):
    """The compiler cannot map a model onto the target (shapes, buffer capacity, lengths)."""


class ContextLengthError(FlightLLMError):
    """A prompt plus the requested tokens does not fit the context the program supports."""


class DeviceError(FlightLLMError):
    """The device or one of its drivers reported a failure."""


class DeviceTimeoutError(DeviceError):
    """A wait on the hardware ran past its timeout."""


class BitstreamError(DeviceError):
    """A bitstream or xclbin is missing, or is the wrong kind of file for this device."""


class DeviceNotFoundError(DeviceError):
    """The device asked for (a U280 card) is not there; the message says what was probed."""


class ArgumentError(FlightLLMError, ValueError):
    """A call was given an argument of the wrong type or outside its range (also a ValueError)."""
