// The SD 2.x prediction type probe that `convert` and `inspect` run on
// checkpoints without a config.
#pragma once

#include <string>

#include "formats/checkpoint.h"
#include "model/model_spec.h"
#include "util/status.h"

namespace sdonnx {

// Decides epsilon or v-prediction for an SD 2.x checkpoint without a config
// the way AUTOMATIC1111 does: run the UNet once with every input element at
// 0.5 and t = 999, and call it v-prediction when mean(out - x) < -1. Sets
// spec->prediction_type and prediction_basis. The probe UNet is written to
// `work_dir`/probe with its weights as external data (as large as the
// UNet's weights) and removed afterwards. On an error the caller removes
// `work_dir`.
Status ProbePredictionType(const Checkpoint& checkpoint, const std::string& work_dir,
                           ModelSpec* spec);

}  // namespace sdonnx
