"""pytest-benchmark settings: record the device (GPU name when there is one) in the machine info."""

import torch


def pytest_benchmark_update_machine_info(config, machine_info):
    from suite.runner.environment import device_name, resolve_device, versions

    device = resolve_device("auto")
    machine_info["device"] = str(device)
    machine_info["device_name"] = device_name(device)
    machine_info["cuda_available"] = torch.cuda.is_available()
    machine_info["versions"] = versions()
