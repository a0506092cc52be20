# kernels.mk: kernel names, sources and build settings for vivado_project/Makefile (GENERATED from flightllm_overlay/hw/design.py, target u280; do not edit)
# Regenerate: python -m flightllm_overlay.hw.vitis --write   (or: make -C vivado_project regen)

FLIGHTLLM_TARGET := u280
FLIGHTLLM_PLATFORM := xilinx_u280_gen3x16_xdma_1_202211_1
FLIGHTLLM_VITIS_VERSION := 2023.1
FLIGHTLLM_XRT_VERSION := 2.15
FLIGHTLLM_CLOCK_MHZ := 225
FLIGHTLLM_CLOCK_HZ := 225000000
FLIGHTLLM_LINK_CFG := flightllm_u280.cfg
FLIGHTLLM_XCLBIN := ../flightllm_overlay/bitstreams/flightllm.xclbin

# HLS sources in SRC_DIR, which also holds the generated header.  Each kernel's
# v++ -c compiles its own top-level source first, then its helpers (-k picks the
# top function); the helpers every kernel shares are in fllm_common.cpp.
SRC_DIR ?= ../flightllm_overlay/src
FLIGHTLLM_KERNELS := scheduler mpe misc memctrl
FLIGHTLLM_SRC_scheduler = $(SRC_DIR)/scheduler.cpp $(SRC_DIR)/fllm_common.cpp
FLIGHTLLM_SRC_mpe = $(SRC_DIR)/mpe.cpp $(SRC_DIR)/fllm_common.cpp
FLIGHTLLM_SRC_misc = $(SRC_DIR)/misc.cpp $(SRC_DIR)/fllm_common.cpp
FLIGHTLLM_SRC_memctrl = $(SRC_DIR)/memctrl.cpp $(SRC_DIR)/memctrl_move.cpp $(SRC_DIR)/mpe_feed.cpp $(SRC_DIR)/fllm_common.cpp

# Compute units (instances) of each kernel, as in the link configuration
FLIGHTLLM_CUS_scheduler := scheduler
FLIGHTLLM_CUS_mpe := mpe_0 mpe_1 mpe_2
FLIGHTLLM_CUS_misc := misc_0 misc_1 misc_2
FLIGHTLLM_CUS_memctrl := memctrl_0 memctrl_1 memctrl_2
