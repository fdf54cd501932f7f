from twisted.application.service import ServiceMaker

udpchat = ServiceMaker(
    "udpchat", "udpchat.tap", "A group-chat server speaking a small text protocol over UDP.", "udpchat"
)
