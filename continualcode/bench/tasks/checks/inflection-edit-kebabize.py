from inflection import kebabize

assert kebabize("DeviceType") == "device-type", kebabize("DeviceType")
assert kebabize("device_type") == "device-type", kebabize("device_type")
assert kebabize("SpecialGuest") == "special-guest", kebabize("SpecialGuest")
